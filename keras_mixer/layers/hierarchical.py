"""Pieces shared by the hierarchical (multi-stage) MLP backbones."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import fake_quant
from keras_mixer.layers.layer_norm import LayerNorm


@keras.saving.register_keras_serializable(package="keras_mixer")
class PatchMerging(keras.layers.Layer):
    """Swin-style downsampling: each 2x2 neighbourhood into channels, in the order x[0::2, 0::2], x[1::2, 0::2],
    x[0::2, 1::2], x[1::2, 1::2] (row offset first), then `norm` and a bias-free linear `reduction` 4C -> 2C.
    `norm_axis=(1, 2, 3)` is GroupNorm(1) (AS-MLP); -1 is LayerNorm over channels (Swin). With `quantize`, the
    norm's output and the reduction are fake-quantized."""

    def __init__(self, norm_axis=-1, epsilon=1e-5, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.norm_axis = tuple(norm_axis) if isinstance(norm_axis, (list, tuple)) else norm_axis
        self.epsilon = epsilon
        self.quantize = quantize
        self.norm = LayerNorm(epsilon, quantize, axis=self.norm_axis, name="norm")

    def build(self, input_shape):
        _, height, width, channels = input_shape
        if height % 2 or width % 2:
            raise KerasMixerError(f"PatchMerging needs an even feature map, got {height}x{width}")
        merged = (input_shape[0], height // 2, width // 2, 4 * channels)
        self.norm.build(merged)
        self.reduction = fake_quant.dense(2 * channels, self.quantize, use_bias=False, name="reduction")
        self.reduction.build(merged)

    def call(self, x):
        x = ops.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        return self.reduction(self.norm(x))

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm": ("reduction",)}

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        return (batch, height // 2, width // 2, 2 * channels)

    def get_config(self):
        return {**super().get_config(), "norm_axis": self.norm_axis, "epsilon": self.epsilon,
                "quantize": self.quantize}
