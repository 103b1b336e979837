"""Vision Permutator's token mixing (Hou et al., 2021): height and width information is moved into the channel
axis by permutations, mixed by a C x C linear layer, and moved back. NHWC."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mlp import MlpBlock
from keras_mixer.layers.split_attention import SplitAttention


def permute_in(x, segment_dim, axis):
    """x[b, h, w, (g, s)] -> [b, g, w, (h, s)] (axis 1) or [b, h, g, (w, s)] (axis 2), with g < segment_dim
    the segment of s = C / segment_dim channels."""
    _, h, w, c = x.shape
    x = ops.reshape(x, (-1, h, w, segment_dim, c // segment_dim))
    if axis == 1:
        return ops.reshape(ops.transpose(x, (0, 3, 2, 1, 4)), (-1, segment_dim, w, h * c // segment_dim))
    return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4)), (-1, h, segment_dim, w * c // segment_dim))


def permute_out(x, segment_dim, axis, shape):
    """Inverse of `permute_in` back to NHWC `shape` (h, w, c)."""
    h, w, c = shape
    s = c // segment_dim
    if axis == 1:
        x = ops.transpose(ops.reshape(x, (-1, segment_dim, w, h, s)), (0, 3, 2, 1, 4))
    else:
        x = ops.transpose(ops.reshape(x, (-1, h, segment_dim, w, s)), (0, 1, 3, 2, 4))
    return ops.reshape(x, (-1, h, w, c))


@keras.saving.register_keras_serializable(package="keras_mixer")
class WeightedPermuteMLP(keras.layers.Layer):
    """Height, width and channel branches (each a C x C linear map without bias: `mlp_h`, `mlp_w`, `mlp_c`),
    split-attention reweighting over the three (`reweight`) and a projection (`proj`), named as the official module.

    The height (width) branch mixes H·S values per row, so the layer fits one grid: H == W == segment_dim when
    C = segment_dim · S, as in the released models (224 / patch 7 -> 32 x 32 with segment_dim 32). With `quantize`,
    every linear map is fake-quantized (the permutations move values without computing new ones)."""

    def __init__(self, segment_dim, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.segment_dim = segment_dim
        self.quantize = quantize

    def build(self, input_shape):
        _, h, w, c = input_shape
        if c % self.segment_dim or h * (c // self.segment_dim) != c or w * (c // self.segment_dim) != c:
            raise KerasMixerError(
                f"{self.name}: a {h}x{w} grid with {c} channels does not fit segment_dim {self.segment_dim} "
                f"(needs height = width = segment_dim and channels divisible by it): build the model for the input "
                f"size its segment_dim was chosen for")
        for name in ("mlp_h", "mlp_w", "mlp_c"):
            setattr(self, name, fake_quant.dense(c, self.quantize, use_bias=False, name=name))
            getattr(self, name).build((None, c))
        self.reweight = SplitAttention(self.quantize, name="reweight")
        self.reweight.build([input_shape] * 3)
        self.proj = fake_quant.dense(c, self.quantize, name="proj")
        self.proj.build(input_shape)

    def call(self, x):
        shape = tuple(x.shape[1:])
        h = permute_out(self.mlp_h(permute_in(x, self.segment_dim, 1)), self.segment_dim, 1, shape)
        w = permute_out(self.mlp_w(permute_in(x, self.segment_dim, 2)), self.segment_dim, 2, shape)
        return self.proj(self.reweight([h, w, self.mlp_c(x)]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "segment_dim": self.segment_dim, "quantize": self.quantize}


@keras.saving.register_keras_serializable(package="keras_mixer")
class PermutatorBlock(keras.layers.Layer):
    """x + DropPath(WeightedPermuteMLP(norm1(x))) / skip_lam; x + DropPath(MLP(norm2(x))) / skip_lam.
    LayerNorm eps 1e-5, exact GELU; names as the official block (`norm1`, `attn`, `norm2`, `mlp`). With `quantize`,
    every sub-layer is fake-quantized (quantization-aware training)."""

    def __init__(self, segment_dim, mlp_ratio=3.0, skip_lam=1.0, drop_path_rate=0.0, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.segment_dim, self.mlp_ratio, self.skip_lam, self.drop_path_rate = segment_dim, mlp_ratio, skip_lam, drop_path_rate
        self.quantize = quantize
        self.norm1 = LayerNorm(1e-5, quantize, name="norm1")
        self.attn = WeightedPermuteMLP(segment_dim, quantize, name="attn")
        self.norm2 = LayerNorm(1e-5, quantize, name="norm2")
        self.drop_path = DropPath(drop_path_rate)

    def build(self, input_shape):
        self.mlp = MlpBlock(int(input_shape[-1] * self.mlp_ratio), gelu="exact", quantize=self.quantize, name="mlp")
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, training=None):
        x = x + dropped(self.drop_path, self.attn(self.norm1(x)), training) / self.skip_lam
        return x + dropped(self.drop_path, self.mlp(self.norm2(x), training=training), training) / self.skip_lam

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm2": ("mlp.dense_0",), "norm1": equalization.REGROUPED}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "segment_dim": self.segment_dim, "mlp_ratio": self.mlp_ratio,
                "skip_lam": self.skip_lam, "drop_path_rate": self.drop_path_rate, "quantize": self.quantize}
