"""Model families. Importing this package registers every variant. `__all__` below is keras_mixer's public model
API, declared once: the top-level package re-exports it."""

from keras_mixer.models.hire_mlp import (
    HIRE_MLP_VARIANTS,
    HireMLPBase,
    HireMLP,
    HireMLPEdgeTPU,
    HireMLPLarge,
    HireMLPModel,
    HireMLPSmall,
    HireMLPTiny,
)
from keras_mixer.models.as_mlp import AS_MLP_VARIANTS, ASMLP, ASMLPBase, ASMLPEdgeTPU, ASMLPSmall, ASMLPTiny

from keras_mixer.models.mlp_mixer import (
    MIXER_VARIANTS,
    MixerB16,
    MixerB32,
    MixerEdgeTPU,
    MixerH14,
    MixerL16,
    MixerL32,
    MixerS8,
    MixerS16,
    MixerS32,
    MLPMixer,
    convert_checkpoint,
)
from keras_mixer.models.applications import feature_extractor
from keras_mixer.models.registry import create_model, list_models
from keras_mixer.models.sparse_mlp import (
    SPARSE_MLP_VARIANTS,
    SparseMLP,
    SparseMLPBase,
    SparseMLPLarge,
    SparseMLPModel,
    SparseMLPSmall,
    with_dispatch,
)
from keras_mixer.models.raft_mlp import (
    RAFT_MLP_VARIANTS,
    RaftMLP,
    RaftMLPEdgeTPU,
    RaftMLPLarge,
    RaftMLPMedium,
    RaftMLPSmall,
)
from keras_mixer.models.vip import (
    VIP_VARIANTS,
    VisionPermutator,
    VisionPermutatorEdgeTPU,
    VisionPermutatorLarge7,
    VisionPermutatorMedium7,
    VisionPermutatorSmall7,
    VisionPermutatorSmall14,
)

__all__ = [
    # builders from the official config fields, and each family's named variants (config tables)
    "MLPMixer", "MIXER_VARIANTS", "MixerS32", "MixerS16", "MixerS8", "MixerB32", "MixerB16", "MixerL32", "MixerL16",
    "MixerH14", "MixerEdgeTPU",
    "ASMLP", "AS_MLP_VARIANTS", "ASMLPTiny", "ASMLPSmall", "ASMLPBase", "ASMLPEdgeTPU",
    "HireMLP", "HIRE_MLP_VARIANTS", "HireMLPTiny", "HireMLPSmall", "HireMLPBase", "HireMLPLarge", "HireMLPEdgeTPU",
    "HireMLPModel",  # deprecated name of HireMLP, kept for code written against earlier versions
    "VisionPermutator", "VIP_VARIANTS", "VisionPermutatorSmall14", "VisionPermutatorSmall7",
    "VisionPermutatorMedium7", "VisionPermutatorLarge7", "VisionPermutatorEdgeTPU",
    "RaftMLP", "RAFT_MLP_VARIANTS", "RaftMLPSmall", "RaftMLPMedium", "RaftMLPLarge", "RaftMLPEdgeTPU",
    "SparseMLP", "SPARSE_MLP_VARIANTS", "SparseMLPSmall", "SparseMLPBase", "SparseMLPLarge", "SparseMLPModel",
    "with_dispatch",
    # the registry, and the Mixer's tools
    "create_model", "list_models", "feature_extractor", "convert_checkpoint",
]
