"""AS-MLP's axial shift (Lian et al., 2021): channel groups displaced along one spatial axis, zero padded."""

import math

import keras
from keras import ops

from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mlp import MlpBlock, gelu


def axial_shift(x, shift_size, axis, dilation=1):
    """Shifts NHWC `x` along `axis` (1: vertical, 2: horizontal): channel c is in group g = c // ceil(C / s) and
    moves by d = (g - s // 2) * dilation, out[..., i, ...] = x[..., i - d, ...], zeros where the source is outside.

    Static slices, zero pads and one concatenation: no gather, no dynamic shape (TFLite- and Edge-TPU-friendly).
    """
    channels = x.shape[-1]
    group = math.ceil(channels / shift_size)
    length = x.shape[axis]
    pieces = []
    for g, start in enumerate(range(0, channels, group)):
        chunk = x[..., start : start + group]
        d = (g - shift_size // 2) * dilation
        if d == 0:
            pieces.append(chunk)
            continue
        pad = [(0, 0)] * 4
        pad[axis] = (d, 0) if d > 0 else (0, -d)
        window = [slice(None)] * 4  # the `length` rows (columns) the shift keeps, whatever the batch
        begin = 0 if d > 0 else -d
        window[axis] = slice(begin, begin + length)
        pieces.append(ops.pad(chunk, pad)[tuple(window)] if abs(d) < length else ops.zeros_like(chunk))
    return ops.concatenate(pieces, axis=-1)


@keras.saving.register_keras_serializable(package="keras_mixer")
class AxialShift(keras.layers.Layer):
    """The AS-MLP token mixer: conv1 -> norm -> GELU -> (horizontal shift -> conv2_1 -> GELU) +
    (vertical shift -> conv2_2 -> GELU) -> norm -> conv3. 1x1 convs are Dense layers on NHWC; norms are GroupNorm
    with one group. Sub-layer names follow the official module (`conv1`, `conv2_1`, `conv2_2`, `conv3`, `norm1`,
    `norm2`). With `quantize`, each 1x1 conv's input, kernel and output and the norms' outputs are fake-quantized
    (the shifts move values without computing new ones)."""

    def __init__(self, shift_size=5, dilation=1, epsilon=1e-5, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.shift_size = shift_size
        self.dilation = dilation
        self.epsilon = epsilon
        self.quantize = quantize
        self.norm1 = LayerNorm(epsilon, quantize, axis=(1, 2, 3), name="norm1")
        self.norm2 = LayerNorm(epsilon, quantize, axis=(1, 2, 3), name="norm2")

    def build(self, input_shape):
        channels = input_shape[-1]
        # 1x1 convolutions as Dense on the channel axis; created here because their width is the input's
        self.conv1, self.conv2_1, self.conv2_2, self.conv3 = (
            fake_quant.dense(channels, self.quantize, name=name) for name in ("conv1", "conv2_1", "conv2_2", "conv3"))
        for layer in (self.conv1, self.norm1, self.conv2_1, self.conv2_2, self.norm2, self.conv3):
            layer.build(input_shape)

    def call(self, x):
        x = gelu(self.norm1(self.conv1(x)), "exact")
        horizontal = gelu(self.conv2_1(axial_shift(x, self.shift_size, 2, self.dilation)), "exact")
        vertical = gelu(self.conv2_2(axial_shift(x, self.shift_size, 1, self.dilation)), "exact")
        return self.conv3(self.norm2(horizontal + vertical))

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm2": ("conv3",), "norm1": equalization.NONLINEAR}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift_size": self.shift_size, "dilation": self.dilation,
                "epsilon": self.epsilon, "quantize": self.quantize}


@keras.saving.register_keras_serializable(package="keras_mixer")
class ASMLPBlock(keras.layers.Layer):
    """x + DropPath(AxialShift(norm1(x))); x + DropPath(MLP(norm2(x))), norms GroupNorm(1), exact GELU. With
    `quantize`, every sub-layer is fake-quantized (quantization-aware training)."""

    def __init__(self, shift_size=5, mlp_ratio=4.0, drop_path_rate=0.0, dilation=1, epsilon=1e-5, quantize=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.dilation = dilation
        self.epsilon = epsilon
        self.quantize = quantize
        self.norm1 = LayerNorm(epsilon, quantize, axis=(1, 2, 3), name="norm1")
        self.axial_shift = AxialShift(shift_size, dilation, epsilon, quantize, name="axial_shift")
        self.norm2 = LayerNorm(epsilon, quantize, axis=(1, 2, 3), name="norm2")
        self.drop_path = DropPath(drop_path_rate)
        self.mlp = None  # its hidden width follows the input width

    def build(self, input_shape):
        self.mlp = MlpBlock(int(input_shape[-1] * self.mlp_ratio), gelu="exact", quantize=self.quantize, name="mlp")
        for layer in (self.norm1, self.axial_shift, self.norm2, self.mlp):
            layer.build(input_shape)

    def call(self, x, training=None):
        x = x + dropped(self.drop_path, self.axial_shift(self.norm1(x)), training)
        return x + dropped(self.drop_path, self.mlp(self.norm2(x), training=training), training)

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm1": ("axial_shift.conv1",), "norm2": ("mlp.dense_0",)}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift_size": self.shift_size, "mlp_ratio": self.mlp_ratio,
                "drop_path_rate": self.drop_path_rate, "dilation": self.dilation, "epsilon": self.epsilon,
                "quantize": self.quantize}
