"""Reusable layers of the Mixer family, each serializable and backend-agnostic (written with `keras.ops`)."""

from keras_mixer.layers.axial_shift import ASMLPBlock, AxialShift, axial_shift
from keras_mixer.layers.drop_path import DropPath
from keras_mixer.layers.fake_quant import ActivationQuantizer, QuantizedDense
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mixer_block import MixerBlock
from keras_mixer.layers.mlp import MlpBlock, gelu
from keras_mixer.layers.hierarchical import PatchMerging
from keras_mixer.layers.hire_mlp import HierarchicalRearrangement, HireBlock
from keras_mixer.layers.input_normalization import InputNormalization
from keras_mixer.layers.patch_embedding import PatchEmbedding
from keras_mixer.layers.permute_mlp import PermutatorBlock, WeightedPermuteMLP
from keras_mixer.layers.moe import MixtureOfExperts
from keras_mixer.layers.sparse_mixer import SparseMixerBlock
from keras_mixer.layers.raft_mlp import CrossScaleEmbedding, RaftBlock
from keras_mixer.layers.split_attention import SplitAttention

__all__ = [
    "ActivationQuantizer",
    "ASMLPBlock",
    "axial_shift",
    "AxialShift",
    "CrossScaleEmbedding",
    "DropPath",
    "gelu",
    "HierarchicalRearrangement",
    "HireBlock",
    "InputNormalization",
    "LayerNorm",
    "MixerBlock",
    "MixtureOfExperts",
    "MlpBlock",
    "PatchEmbedding",
    "PatchMerging",
    "PermutatorBlock",
    "QuantizedDense",
    "RaftBlock",
    "SparseMixerBlock",
    "SplitAttention",
    "WeightedPermuteMLP",
]
