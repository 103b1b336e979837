"""The Mixer stem: non-overlapping patches projected to tokens."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import fake_quant


@keras.saving.register_keras_serializable(package="keras_mixer")
class PatchEmbedding(keras.layers.Layer):
    """A convolution with kernel = stride = patch size (the official `stem`), flattened row-major to [batch, tokens, C].

    It is computed as what it is, one matmul of every patch's pixels (rows, columns, channels: the kernel's HWIO
    order) with the kernel flattened to [P·P·channels, C]: a TFLite FULLY_CONNECTED with a contraction of P·P·3,
    which XNNPACK runs at its matmul speed. As a CONV_2D, XNNPACK pads each kernel pixel's 3 channels to 8 and ran
    Mixer-S/32's stem (7.7 % of its MACs) at a quarter of that speed: 24 % of the int8 model's time.

    The layer owns `kernel` (HWIO, as Flax stores it) and `bias` itself, so a layer named `stem` has exactly the
    official variable paths `stem/kernel` and `stem/bias`. With `quantize`, the image input, the kernel
    (per tensor, as TFLite quantizes a fully connected layer's weights) and the output are fake-quantized.
    """

    def __init__(self, patch_size, hidden_dim, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.quantize = quantize
        self.input_quant = fake_quant.maybe_quantizer(quantize, "input_quant")
        self.output_quant = fake_quant.maybe_quantizer(quantize, "output_quant")

    def grid_shape(self, input_shape):
        """The patch grid (rows, cols) for an NHWC input shape; raises if the image does not tile into patches."""
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise KerasMixerError("PatchEmbedding needs a static image height and width: the token count must be fixed")
        if height % self.patch_size or width % self.patch_size:
            raise KerasMixerError(
                f"Input size {height}x{width} is not a multiple of the patch size {self.patch_size}: "
                f"height and width must both be divisible by {self.patch_size}"
            )
        return height // self.patch_size, width // self.patch_size

    def build(self, input_shape):
        self.grid_shape(input_shape)
        p = self.patch_size
        self.kernel = self.add_weight(
            name="kernel", shape=(p, p, input_shape[-1], self.hidden_dim), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(self.hidden_dim,), initializer="zeros")
        fake_quant.build_quantizers(self.input_quant, self.output_quant)

    def call(self, images, training=None):
        rows, cols = self.grid_shape(images.shape)
        p, channels = self.patch_size, images.shape[-1]
        kernel = ops.reshape(self.kernel, (p * p * channels, self.hidden_dim))
        kernel = fake_quant.fake_quant_weights_per_tensor(kernel) if self.quantize else kernel
        x = fake_quant.apply(self.input_quant, images, training)
        # [B·rows, p, cols, p·channels] -> [B·rows, cols, p, p·channels]: 4-D, as every TFLite delegate transposes
        patches = ops.transpose(ops.reshape(x, (-1, p, cols, p * channels)), (0, 2, 1, 3))
        patches = ops.reshape(patches, (-1, rows * cols, p * p * channels))
        x = ops.matmul(patches, kernel) + self.bias
        return fake_quant.apply(self.output_quant, x, training)

    def compute_output_shape(self, input_shape):
        rows, cols = self.grid_shape(input_shape)
        return (input_shape[0], rows * cols, self.hidden_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "patch_size": self.patch_size,
            "hidden_dim": self.hidden_dim,
            "quantize": self.quantize,
        }
