"""Hire-MLP's token mixing (Guo et al., 2021): inner-region rearrangement of rows / columns into channels, and a
cross-region circular shift between blocks. NHWC; rolls and circular pads are static slices and concatenations."""

import keras
from keras import ops

from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.mlp import MlpBlock
from keras_mixer.layers.split_attention import SplitAttention


def roll(x, shift, axis):
    """Circular shift by `shift` (>= 0) along `axis`: out[i] = x[i - shift]."""
    if shift == 0:
        return x
    length = x.shape[axis]
    shift %= length
    head = [slice(None)] * 4
    tail = [slice(None)] * 4
    head[axis], tail[axis] = slice(length - shift, None), slice(0, length - shift)
    return ops.concatenate([x[tuple(head)], x[tuple(tail)]], axis=axis)


def circular_pad(x, multiple, axis):
    """Appends the first rows (columns) at the end until the length is a multiple of `multiple`."""
    extra = (-x.shape[axis]) % multiple
    if extra == 0:
        return x
    index = [slice(None)] * 4
    index[axis] = slice(0, extra)
    return ops.concatenate([x, x[tuple(index)]], axis=axis)


def regions_to_channels(x, pixel, axis):
    """Inner-region rearrangement: groups of `pixel` rows (axis 1) or columns (axis 2) into channels,
    channel index c * pixel + k (C major, k minor) for row r * pixel + k of region r."""
    b, h, w, c = x.shape
    b = -1 if b is None else b
    if axis == 1:
        x = ops.reshape(x, (b, h // pixel, pixel, w, c))
        x = ops.transpose(x, (0, 1, 3, 4, 2))
        return ops.reshape(x, (b, h // pixel, w, c * pixel))
    x = ops.reshape(x, (b, h, w // pixel, pixel, c))
    x = ops.transpose(x, (0, 1, 2, 4, 3))
    return ops.reshape(x, (b, h, w // pixel, c * pixel))


def channels_to_regions(x, pixel, axis):
    """Inverse of `regions_to_channels`."""
    b, h, w, cp = x.shape
    b = -1 if b is None else b
    c = cp // pixel
    x = ops.reshape(x, (b, h, w, c, pixel))
    if axis == 1:
        return ops.reshape(ops.transpose(x, (0, 1, 4, 2, 3)), (b, h * pixel, w, c))
    return ops.reshape(ops.transpose(x, (0, 1, 2, 4, 3)), (b, h, w * pixel, c))


def _batch_norm(name):
    # torch BatchNorm2d(eps=1e-5, momentum=0.1) == Keras momentum 0.9
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


@keras.saving.register_keras_serializable(package="keras_mixer")
class HierarchicalRearrangement(keras.layers.Layer):
    """Hire-MLP's token mixing (the authors' `HireMLP` module; named here for what it does, so that `HireMLP` means
    the model alone). Height and width branches (shift by `step`, circular pad, rows/columns into channels, C*p -> C/2 -> C*p
    MLP, back), a channel branch, split-attention reweighting over the three, and a projection. Sub-layer names
    follow the official module (`mlp_h1`, `mlp_h1_norm`, `mlp_h2`, `mlp_w1`, ..., `mlp_c`, `reweight`, `proj`).
    With `quantize`, every linear map is fake-quantized (its input, kernel and output; the BatchNorms between them
    fold into the next map's input range, as the export folds them)."""

    def __init__(self, pixel=2, step=0, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.pixel = pixel
        self.step = step
        self.quantize = quantize

    def build(self, input_shape):
        c, p = input_shape[-1], self.pixel

        def dense(units, name, **options):
            return fake_quant.dense(units, self.quantize, name=name, **options)

        self.mlp_h1, self.mlp_w1 = dense(c // 2, "mlp_h1", use_bias=False), dense(c // 2, "mlp_w1", use_bias=False)
        self.mlp_h1_norm, self.mlp_w1_norm = _batch_norm("mlp_h1_norm"), _batch_norm("mlp_w1_norm")
        self.mlp_h2, self.mlp_w2 = dense(c * p, "mlp_h2"), dense(c * p, "mlp_w2")
        self.mlp_c = dense(c, "mlp_c")
        self.reweight = SplitAttention(self.quantize, name="reweight")
        self.proj = dense(c, "proj")
        grid = (None, None, None, c * p)
        for layer in (self.mlp_h1, self.mlp_w1):
            layer.build(grid)
        for layer in (self.mlp_h1_norm, self.mlp_w1_norm):
            layer.build((None, None, None, c // 2))
        for layer in (self.mlp_h2, self.mlp_w2):
            layer.build((None, None, None, c // 2))
        self.mlp_c.build(input_shape)
        self.reweight.build([input_shape] * 3)
        self.proj.build(input_shape)

    def _branch(self, x, axis, first, norm, second, training):
        length = x.shape[axis]
        y = circular_pad(roll(x, self.step, axis), self.pixel, axis)
        y = regions_to_channels(y, self.pixel, axis)
        y = second(ops.relu(norm(first(y), training=training)))
        y = channels_to_regions(y, self.pixel, axis)
        index = [slice(None)] * 4
        index[axis] = slice(0, length)
        return roll(y[tuple(index)], (-self.step) % length, axis)

    def call(self, x, training=None):
        h = self._branch(x, 1, self.mlp_h1, self.mlp_h1_norm, self.mlp_h2, training)
        w = self._branch(x, 2, self.mlp_w1, self.mlp_w1_norm, self.mlp_w2, training)
        return self.proj(self.reweight([h, w, self.mlp_c(x)]))

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"mlp_h1_norm": equalization.NONLINEAR, "mlp_w1_norm": equalization.NONLINEAR}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pixel": self.pixel, "step": self.step, "quantize": self.quantize}


# files saved before the rename name the layer "keras_mixer>HireMLP": they keep loading
keras.saving.get_custom_objects()["keras_mixer>HireMLP"] = HierarchicalRearrangement


@keras.saving.register_keras_serializable(package="keras_mixer")
class HireBlock(keras.layers.Layer):
    """x + DropPath(HierarchicalRearrangement(norm1(x))); x + DropPath(MLP(norm2(x))); BatchNorm, exact GELU, names as
    official. With `quantize`, every sub-layer and norm2's output (the MLP's input) are fake-quantized."""

    def __init__(self, pixel=2, step=0, mlp_ratio=4.0, drop_path_rate=0.0, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.pixel, self.step, self.mlp_ratio, self.drop_path_rate = pixel, step, mlp_ratio, drop_path_rate
        self.quantize = quantize
        self.norm1 = _batch_norm("norm1")
        self.attn = HierarchicalRearrangement(pixel, step, quantize, name="attn")
        self.norm2 = _batch_norm("norm2")
        self.norm2_quant = fake_quant.maybe_quantizer(quantize, "norm2_quant")
        self.drop_path = DropPath(drop_path_rate)

    def build(self, input_shape):
        self.mlp = MlpBlock(int(input_shape[-1] * self.mlp_ratio), gelu="exact", quantize=self.quantize, name="mlp")
        for layer in (self.norm1, self.attn, self.norm2, self.mlp):
            layer.build(input_shape)
        fake_quant.build_quantizers(self.norm2_quant)

    def call(self, x, training=None):
        x = x + dropped(self.drop_path, self.attn(self.norm1(x, training=training), training=training), training)
        normed = fake_quant.apply(self.norm2_quant, self.norm2(x, training=training), training)
        return x + dropped(self.drop_path, self.mlp(normed, training=training), training)

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm2": ("mlp.dense_0",), "norm1": equalization.REGROUPED}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pixel": self.pixel, "step": self.step, "mlp_ratio": self.mlp_ratio,
                "drop_path_rate": self.drop_path_rate, "quantize": self.quantize}
