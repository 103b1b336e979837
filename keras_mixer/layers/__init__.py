"""Reusable layers of the Mixer family, each serializable and backend-agnostic (written with `keras.ops`)."""

from keras_mixer.layers.axial_shift import ASMLPBlock, AxialShift, axial_shift
from keras_mixer.layers.drop_path import DropPath
from keras_mixer.layers.fake_quant import ActivationQuantizer, QuantizedDense
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mixer_block import MixerBlock
from keras_mixer.layers.mlp import MlpBlock, gelu
from keras_mixer.layers.hierarchical import PatchMerging
from keras_mixer.layers.hire_mlp import HireBlock, HireMLP
from keras_mixer.layers.input_normalization import InputNormalization
from keras_mixer.layers.patch_embedding import PatchEmbedding
from keras_mixer.layers.permute_mlp import PermutatorBlock, WeightedPermuteMLP
from keras_mixer.layers.moe import MixtureOfExperts
from keras_mixer.layers.sparse_mixer import SparseMixerBlock
from keras_mixer.layers.raft_mlp import CrossScaleEmbedding, RaftBlock
from keras_mixer.layers.split_attention import SplitAttention

__all__ = [
    "ASMLPBlock",
    "AxialShift",
    "axial_shift",
    "PatchMerging",
    "HireBlock",
    "HireMLP",
    "InputNormalization",
    "ActivationQuantizer",
    "QuantizedDense",
    "DropPath", "LayerNorm", "MixerBlock", "MlpBlock", "PatchEmbedding", "SplitAttention", "PermutatorBlock", "WeightedPermuteMLP", "CrossScaleEmbedding", "RaftBlock", "MixtureOfExperts", "SparseMixerBlock", "gelu"]
