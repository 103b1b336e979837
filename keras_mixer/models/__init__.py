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
from keras_mixer.models.registry import create_model, list_models, list_pretrained
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

# The public model API (sorted): each family's builder from the official config fields, its named variants and
# config table, the registry and the Mixer's tools. HireMLPModel, HireMLP's deprecated name, stays importable
# but is not exported.
__all__ = [
    "ASMLP", "ASMLPBase", "ASMLPEdgeTPU", "ASMLPSmall", "ASMLPTiny", "AS_MLP_VARIANTS", "HIRE_MLP_VARIANTS", "HireMLP",
    "HireMLPBase", "HireMLPEdgeTPU", "HireMLPLarge", "HireMLPSmall", "HireMLPTiny", "MIXER_VARIANTS", "MLPMixer",
    "MixerB16", "MixerB32", "MixerEdgeTPU", "MixerH14", "MixerL16", "MixerL32", "MixerS16", "MixerS32", "MixerS8",
    "RAFT_MLP_VARIANTS", "RaftMLP", "RaftMLPEdgeTPU", "RaftMLPLarge", "RaftMLPMedium", "RaftMLPSmall",
    "SPARSE_MLP_VARIANTS", "SparseMLP", "SparseMLPBase", "SparseMLPLarge", "SparseMLPModel", "SparseMLPSmall",
    "VIP_VARIANTS", "VisionPermutator", "VisionPermutatorEdgeTPU", "VisionPermutatorLarge7", "VisionPermutatorMedium7",
    "VisionPermutatorSmall14", "VisionPermutatorSmall7", "convert_checkpoint", "create_model", "feature_extractor",
    "list_models", "list_pretrained", "with_dispatch",
]
