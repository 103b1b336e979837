"""keras_mixer: MLP-Mixer and its all-MLP successors for Keras 3."""

from keras_mixer import errors, layers
from keras_mixer.models import (
    ASMLP,
    AS_MLP_VARIANTS,
    ASMLPBase,
    ASMLPEdgeTPU,
    ASMLPSmall,
    ASMLPTiny,
    HIRE_MLP_VARIANTS,
    HireMLPBase,
    HireMLP,
    HireMLPEdgeTPU,
    HireMLPLarge,
    HireMLPModel,
    HireMLPSmall,
    HireMLPTiny,
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
    RAFT_MLP_VARIANTS,
    RaftMLP,
    RaftMLPEdgeTPU,
    RaftMLPLarge,
    RaftMLPMedium,
    RaftMLPSmall,
    SPARSE_MLP_VARIANTS,
    SparseMLP,
    SparseMLPBase,
    SparseMLPLarge,
    SparseMLPSmall,
    VIP_VARIANTS,
    VisionPermutator,
    VisionPermutatorEdgeTPU,
    VisionPermutatorLarge7,
    VisionPermutatorMedium7,
    VisionPermutatorSmall7,
    VisionPermutatorSmall14,
    create_model,
    feature_extractor,
    list_models,
)
from keras_mixer.weights import list_pretrained
from keras_mixer.preprocessing import decode_predictions, imagenet_labels, preprocess_input
from keras_mixer.inference import classify

# The training recipes' schedule and loss are serialized into the `.keras` files `train` and `qat` write: register
# them on import, so those files load with plain `keras.models.load_model` after `import keras_mixer`.
from keras_mixer.training import recipe as _recipe  # noqa: F401

__version__ = "0.1.0"
