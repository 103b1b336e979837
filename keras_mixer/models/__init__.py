"""Model families. Importing this package registers every variant."""

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
    feature_extractor,
)
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
