"""RaftMLP's pieces (Tatsunami & Taki, 2021): the cross-scale embedding and the raft token-mixing block. NHWC."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mlp import MlpBlock


@keras.saving.register_keras_serializable(package="keras_mixer")
class CrossScaleEmbedding(keras.layers.Layer):
    """Patches of every size in `kernels` taken at stride `patch_size` (zero padding (k - patch_size) / 2), their
    values concatenated (kernel by kernel, each channel-major then row then column, as torch's Unfold) and projected
    by one linear map to `dim`.

    The layer keeps that linear map as the official (in·Σk², dim) `kernel`; since a linear map of concatenated
    patches is a sum of strided convolutions, it runs as one Conv2D per kernel size (no unfold, TFLite-friendly).
    With `quantize`, the input, the kernel (per output channel, as TFLite quantizes each conv) and the output are
    fake-quantized."""

    def __init__(self, dim, patch_size, kernels, quantize=False, **kwargs):
        super().__init__(**kwargs)
        if any(k < patch_size or (k - patch_size) % 2 for k in kernels):
            raise KerasMixerError(f"embedding kernels {kernels} must be >= patch_size {patch_size} and differ from it by an "
                             "even number")
        self.dim, self.patch_size, self.kernels = dim, patch_size, tuple(kernels)
        self.quantize = quantize
        self.input_quant = fake_quant.maybe_quantizer(quantize, "input_quant")
        self.output_quant = fake_quant.maybe_quantizer(quantize, "output_quant")

    def build(self, input_shape):
        self.in_channels = input_shape[-1]
        size = self.in_channels * sum(k * k for k in self.kernels)
        self.kernel = self.add_weight(name="kernel", shape=(size, self.dim), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.dim,), initializer="zeros")
        fake_quant.build_quantizers(self.input_quant, self.output_quant)

    def call(self, x, training=None):
        x = fake_quant.apply(self.input_quant, x, training)
        weights = fake_quant.fake_quant_weights_per_channel(self.kernel) if self.quantize else self.kernel
        out, start = self.bias, 0
        for k in self.kernels:
            size = self.in_channels * k * k
            # rows ordered (channel, row, column) -> HWIO
            kernel = ops.transpose(ops.reshape(weights[start:start + size], (self.in_channels, k, k, self.dim)),
                                   (1, 2, 0, 3))
            pad = (k - self.patch_size) // 2
            padded = ops.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
            out = out + ops.conv(padded, kernel, strides=self.patch_size, padding="valid",
                                 data_format="channels_last")
            start += size
        return fake_quant.apply(self.output_quant, out, training)

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        return (b, h // self.patch_size, w // self.patch_size, self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "patch_size": self.patch_size, "kernels": self.kernels,
                "quantize": self.quantize}


def _to_raft_major(x, rafts):
    """Channels (i_r, i_o) -> (i_o, i_r) on NHWC."""
    _, h, w, c = x.shape
    return ops.reshape(ops.transpose(ops.reshape(x, (-1, h, w, rafts, c // rafts)), (0, 1, 2, 4, 3)), (-1, h, w, c))


@keras.saving.register_keras_serializable(package="keras_mixer")
class RaftBlock(keras.layers.Layer):
    """Raft token mixing then channel mixing, each residual (pre-norm, stochastic depth).

    Channels are rafts: index i_r·o + i_o with r = `raft_size` rafts of o = C / r. Vertical mixing sees rows
    (i_o, w) and mixes the r·h values (i_r, h) of each with an MLP (expansion `token_expansion_factor`); horizontal
    mixing the same with (i_o, h) rows and (i_r, w) values. Their LayerNorms normalize over the channels with the
    affine parameters indexed i_o·r + i_r, as the official code applies them after its raft rearrangement. With
    `quantize`, every norm and MLP is fake-quantized (the raft rearrangements move values only)."""

    def __init__(self, raft_size=2, token_expansion_factor=2, channel_expansion_factor=4, drop_path_rate=0.0,
                 quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.raft_size, self.drop_path_rate, self.quantize = raft_size, drop_path_rate, quantize
        self.token_expansion_factor, self.channel_expansion_factor = token_expansion_factor, channel_expansion_factor
        self.vertical_norm = LayerNorm(1e-5, quantize, name="vertical_norm")
        self.horizontal_norm = LayerNorm(1e-5, quantize, name="horizontal_norm")
        self.channel_norm = LayerNorm(1e-5, quantize, name="channel_norm")
        self.drop_path = DropPath(drop_path_rate)

    def build(self, input_shape):
        _, h, w, c = input_shape
        r = self.raft_size
        if h is None or w is None or c % r:
            raise KerasMixerError(f"{self.name}: needs a static grid and channels divisible by raft_size {r}, got "
                             f"{input_shape}")
        self.vertical_mlp, self.horizontal_mlp, self.channel_mlp = (
            MlpBlock(width, gelu="exact", quantize=self.quantize, name=name)
            for width, name in ((self.token_expansion_factor * r * h, "vertical_mlp"),
                                (self.token_expansion_factor * r * w, "horizontal_mlp"),
                                (self.channel_expansion_factor * c, "channel_mlp")))
        for norm in (self.vertical_norm, self.horizontal_norm, self.channel_norm):
            norm.build(input_shape)
        self.vertical_mlp.build((None, c // r * w, r * h))
        self.horizontal_mlp.build((None, c // r * h, r * w))
        self.channel_mlp.build(input_shape)

    def _mix(self, x, norm, mlp, order, training):
        """`order` puts [b, h, w, i_o, i_r] into [b, i_o, rows, i_r, cols]; the MLP mixes (i_r, cols)."""
        _, h, w, c = x.shape
        r, o = self.raft_size, c // self.raft_size
        y = ops.transpose(ops.reshape(norm(_to_raft_major(x, r)), (-1, h, w, o, r)), order)
        shape = y.shape
        y = mlp(ops.reshape(y, (-1, shape[1] * shape[2], shape[3] * shape[4])), training=training)
        inverse = [order.index(axis) for axis in range(5)]
        y = ops.transpose(ops.reshape(y, (-1, *shape[1:])), inverse)  # [b, h, w, i_o, i_r]
        y = ops.reshape(ops.transpose(y, (0, 1, 2, 4, 3)), (-1, h, w, c))  # channels (i_r, i_o) again
        return x + dropped(self.drop_path, y, training)

    def call(self, x, training=None):
        x = self._mix(x, self.vertical_norm, self.vertical_mlp, (0, 3, 2, 4, 1), training)  # rows (i_o, w), cols (i_r, h)
        x = self._mix(x, self.horizontal_norm, self.horizontal_mlp, (0, 3, 1, 4, 2), training)  # (i_o, h), (i_r, w)
        mixed = self.channel_mlp(self.channel_norm(x), training=training)
        return x + dropped(self.drop_path, mixed, training)

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"channel_norm": ("channel_mlp.dense_0",), "vertical_norm": equalization.TOKEN_MIXING,
                "horizontal_norm": equalization.TOKEN_MIXING}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "raft_size": self.raft_size,
                "token_expansion_factor": self.token_expansion_factor,
                "channel_expansion_factor": self.channel_expansion_factor, "drop_path_rate": self.drop_path_rate,
                "quantize": self.quantize}
