"""Layer normalization over the last axis, written so that TFLite lowers it to int8-only ops."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mixer")
class LayerNorm(keras.layers.Layer):
    """LayerNorm with Flax's parameter names (`scale`, `bias`) and default epsilon (1e-6).

    Computed as mean -> subtract -> mean of squares -> rsqrt -> scale/shift. `keras.layers.LayerNormalization`
    converts to a graph with a float NEG between DEQUANTIZE/QUANTIZE (a float island inside an int8 model); this
    form converts to MEAN, SUB, SQUARED_DIFFERENCE/MUL, RSQRT, MUL, ADD, all with int8 kernels.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        channels = input_shape[-1]
        self.scale = self.add_weight(name="scale", shape=(channels,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")

    def call(self, x):
        centered = ops.subtract(x, ops.mean(x, axis=-1, keepdims=True))
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        return centered * ops.rsqrt(variance + self.epsilon) * self.scale + self.bias

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
