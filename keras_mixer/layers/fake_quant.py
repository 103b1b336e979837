"""Fake quantization for quantization-aware training, on Keras' own `fake_quant_with_min_max_vars`
(any backend; straight-through gradients; on TensorFlow it emits the FakeQuant ops whose ranges the TFLite
converter takes). Conventions follow tfmot's default 8-bit scheme: activations asymmetric with moving-average
ranges, weights symmetric with narrow range, per-tensor for Dense kernels (a per-channel Dense kernel used
through a transposing matmul fails TFLite conversion) and per-output-channel for convolutions.
"""

import keras
from keras import ops

NUM_BITS = 8
# a zero range (an all-zero kernel, e.g. the zero-initialized head) gives NaN on JAX; TF nudges it silently
MIN_RANGE = 1e-7


def fake_quant_weights_per_tensor(kernel):
    """Symmetric per-tensor fake-quant of a weight tensor: range [-max|w|, max|w|], 255 levels."""
    bound = ops.maximum(ops.max(ops.abs(kernel)), MIN_RANGE)
    return keras.quantizers.fake_quant_with_min_max_vars(kernel, -bound, bound, NUM_BITS, narrow_range=True)


@keras.saving.register_keras_serializable(package="keras_mixer")
class ActivationQuantizer(keras.layers.Layer):
    """8-bit asymmetric fake-quant of an activation with a range learned by moving averages.

    In training, each batch's min/max update the range (the first batch sets it, later ones move it with
    `decay`); at inference the stored range is used. The range always contains 0, so zero is exact (padding,
    ReLU-like outputs), as TFLite requires.
    """

    is_fake_quant = True

    def __init__(self, decay=0.99, **kwargs):
        # float32 state, never autocast: under a mixed policy the input keeps its dtype and `call` decides the
        # int8 level in float32
        kwargs.setdefault("dtype", "float32")
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.decay = decay
        self.calibrating = False  # set by `keras_mixer.quantization.calibrate`: ranges move in inference mode too

    def build(self, input_shape=None):
        # scalar state, independent of the input shape (parents build their quantizers with build_quantizers)
        self.range_min = self.add_weight(name="range_min", shape=(), initializer="zeros", trainable=False)
        self.range_max = self.add_weight(name="range_max", shape=(), initializer="zeros", trainable=False)
        self.updates = self.add_weight(name="updates", shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=None):
        # under a mixed policy the int8 level a value rounds to, and the range, are decided in float32 (bfloat16
        # keeps 8 significant bits, too few to place 256 levels); the result goes on in the input's dtype
        compute_dtype, x = x.dtype, ops.cast(x, "float32")
        if training or self.calibrating:
            batch_min = ops.stop_gradient(ops.min(x))
            batch_max = ops.stop_gradient(ops.max(x))
            first = ops.equal(self.updates, 0.0)
            self.range_min.assign(ops.where(first, batch_min, self.decay * self.range_min + (1 - self.decay) * batch_min))
            self.range_max.assign(ops.where(first, batch_max, self.decay * self.range_max + (1 - self.decay) * batch_max))
            self.updates.assign(self.updates + 1.0)
        low = ops.minimum(self.range_min, 0.0)
        high = ops.maximum(self.range_max, low + MIN_RANGE)  # a collapsed range would divide by zero
        return ops.cast(keras.quantizers.fake_quant_with_min_max_vars(x, low, high, NUM_BITS), compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "decay": self.decay}


def maybe_quantizer(quantize, name):
    """An ActivationQuantizer when `quantize`, else None (the float graph gets no extra op)."""
    return ActivationQuantizer(name=name) if quantize else None


def build_quantizers(*quantizers):
    """Builds a parent's quantizers inside its `build`, so their variables get nested paths (`stem/input_quant/...`)
    and exist before weights are loaded."""
    for quantizer in quantizers:
        if quantizer is not None and not quantizer.built:
            quantizer.build()


def apply(quantizer, x, training=None):
    return x if quantizer is None else quantizer(x, training=training)


def fake_quant_weights_per_channel(kernel):
    """Symmetric per-output-channel (last axis) fake-quant of a convolution kernel, as TFLite quantizes a conv's."""
    bound = ops.maximum(ops.max(ops.abs(kernel), axis=tuple(range(len(kernel.shape) - 1))), MIN_RANGE)
    return keras.quantizers.fake_quant_with_min_max_vars(kernel, -bound, bound, NUM_BITS, narrow_range=True,
                                                         axis=-1)


@keras.saving.register_keras_serializable(package="keras_mixer")
class QuantizedDense(keras.layers.Dense):
    """`keras.layers.Dense` with a fake-quantized kernel (per-tensor) and output, and with `quantize_input` its input
    too: what `quantize_model` puts in place of every plain Dense (e.g. the classifier head), and what the blocks of
    the hierarchical families build with `quantize` (`dense`). Same variables, so float weights copy over by path."""

    def __init__(self, *args, quantize_input=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.quantize_input = quantize_input
        self.input_quant = maybe_quantizer(quantize_input, "input_quant")
        self.output_quant = ActivationQuantizer(name="output_quant")

    def build(self, input_shape):
        super().build(input_shape)
        build_quantizers(self.input_quant, self.output_quant)

    def call(self, inputs, training=None):
        inputs = apply(self.input_quant, inputs, training)
        x = ops.matmul(inputs, fake_quant_weights_per_tensor(self.kernel))
        if self.use_bias:
            x = x + self.bias
        # the activation (e.g. softmax) runs after the quantized logits, as TFLite runs it on int8 logits
        return self.activation(self.output_quant(x, training=training))

    def get_config(self):
        return {**super().get_config(), "quantize_input": self.quantize_input}


@keras.saving.register_keras_serializable(package="keras_mixer")
class QuantizedConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` with its input, kernel (per output channel) and output fake-quantized: what
    `quantize_model` puts in place of every plain Conv2D (the stems and downsampling of the hierarchical families)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_quant = ActivationQuantizer(name="input_quant")
        self.output_quant = ActivationQuantizer(name="output_quant")

    def build(self, input_shape):
        super().build(input_shape)
        build_quantizers(self.input_quant, self.output_quant)

    def call(self, inputs, training=None):
        x = self.convolution_op(self.input_quant(inputs, training=training),
                                fake_quant_weights_per_channel(self.kernel))
        if self.use_bias:
            x = x + self.bias
        return self.activation(self.output_quant(x, training=training))


def dense(units, quantize=False, **kwargs):
    """A Dense sub-layer of a block: with `quantize`, a `QuantizedDense` whose input, kernel and output are
    fake-quantized, the tensors the default int8 export gives each FULLY_CONNECTED in int8."""
    return QuantizedDense(units, quantize_input=True, **kwargs) if quantize else keras.layers.Dense(units, **kwargs)


@keras.saving.register_keras_serializable(package="keras_mixer")
class FixedRangeQuantizer(keras.layers.Layer):
    """8-bit fake-quant with a fixed range [low, high]: pins the int8 range a converter gives its input tensor.
    `to_tflite` puts one after the logits, with headroom over the calibration images' logits, so that test
    images with larger logits are not clipped at the integer limit."""

    def __init__(self, low, high, **kwargs):
        super().__init__(**kwargs)
        self.low = float(min(low, 0.0))
        self.high = float(max(high, self.low + MIN_RANGE))

    def call(self, x):
        return keras.quantizers.fake_quant_with_min_max_vars(x, self.low, self.high, NUM_BITS)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "low": self.low, "high": self.high}
