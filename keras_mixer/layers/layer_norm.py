"""Layer normalization over the last axis, written so that TFLite lowers it to int8-only ops."""

import keras
from keras import ops

from keras_mixer.layers import fake_quant


@keras.saving.register_keras_serializable(package="keras_mixer")
class LayerNorm(keras.layers.Layer):
    """LayerNorm with Flax's parameter names (`scale`, `bias`) and default epsilon (1e-6).

    `axis` names the axes normalized together (default: the channels). `axis=(1, 2, 3)` on NHWC is GroupNorm with
    one group (as AS-MLP uses): statistics over H, W and C, affine per channel.

    Computed as mean -> subtract -> mean of squares -> rsqrt -> scale/shift. `keras.layers.LayerNormalization`
    converts to a graph with a float NEG between DEQUANTIZE/QUANTIZE (a float island inside an int8 model); this
    form converts to MEAN, SUB, SQUARED_DIFFERENCE/MUL, RSQRT, MUL, ADD, all with int8 kernels.
    """

    def __init__(self, epsilon=1e-6, quantize=False, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
        self.quantize = quantize
        self.output_quant = fake_quant.maybe_quantizer(quantize, "output_quant")

    def build(self, input_shape):
        channels = input_shape[-1]
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        fake_quant.build_quantizers(self.output_quant)

    def call(self, x, training=None):
        if keras.backend.backend() == "torch" and self.axis == -1:
            # torch's fused LayerNorm kernel (forward and backward), the same function: Mixer-S/32 trains 1.19x
            # faster on torch with it (14.7 vs 12.4 images/s, the repository's training benchmark); TensorFlow keeps the
            # form below (its TFLite graph), JAX too (XLA fuses it)
            y = ops.layer_normalization(x, self.scale, self.bias, epsilon=self.epsilon)
        else:
            centered = ops.subtract(x, ops.mean(x, axis=self.axis, keepdims=True))
            variance = ops.mean(ops.square(centered), axis=self.axis, keepdims=True)
            y = centered * ops.rsqrt(variance + self.epsilon) * self.scale + self.bias
        return fake_quant.apply(self.output_quant, y, training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon, "quantize": self.quantize, "axis": self.axis}
