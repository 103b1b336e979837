"""The two-layer MLP every Mixer-family block is made of."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import fake_quant
from keras_mixer.layers.drop_path import dropped

GELU_FORMS = ("tanh", "exact", "sigmoid")


def gelu(x, form):
    """GELU in the named form: "tanh" (Flax's default, what the official Mixer checkpoints use), "exact" (erf, timm)
    or "sigmoid", x·sigmoid(1.702·x) (Hendrycks & Gimpel's approximation: LOGISTIC and MUL, which the Edge TPU maps,
    where the GELU builtin makes its compiler reject the model)."""
    if form not in GELU_FORMS:
        raise KerasMixerError(f"gelu form must be one of {GELU_FORMS}, got {form!r}")
    if form == "sigmoid":
        return x * ops.sigmoid(1.702 * x)
    return ops.gelu(x, approximate=form == "tanh")


@keras.saving.register_keras_serializable(package="keras_mixer")
class FusedDense(keras.layers.Dense):
    """`keras.layers.Dense` whose matmul and bias add are one op on the torch backend (`torch.nn.functional.linear`:
    an addmm, as timm's `nn.Linear`). Keras adds the bias in a second pass over a freshly allocated output; measured
    on CPU that is 9-18 % of a Mixer matmul's time and 3 % of a Mixer-S/16 training step (the documentation's
    training benchmarks, phase by phase). Same variables, same function; other backends, and Dense layers quantized or
    with LoRA by Keras, run Keras' own call."""

    def call(self, inputs, training=None):
        if keras.backend.backend() != "torch" or not self.use_bias or self.lora_enabled or self.quantization_mode:
            return super().call(inputs, training=training)
        import torch  # the torch backend is running, so torch is installed

        kernel, bias = ops.convert_to_tensor(self.kernel), ops.convert_to_tensor(self.bias)
        return self.activation(torch.nn.functional.linear(inputs, kernel.T, bias))


@keras.saving.register_keras_serializable(package="keras_mixer")
class MlpBlock(keras.layers.Layer):
    """Dense(mlp_dim) -> GELU -> Dense(back to the input width), with optional dropout after each (as timm's `Mlp`).

    Sub-layers are named `Dense_0` / `Dense_1` like the official Flax module, so checkpoint keys map by name.
    With `quantize`, both Dense layers and the GELU output are fake-quantized (quantization-aware training).
    """

    def __init__(self, mlp_dim, gelu="tanh", dropout_rate=0.0, quantize=False, **kwargs):
        super().__init__(**kwargs)
        if gelu not in GELU_FORMS:
            raise KerasMixerError(f"gelu form must be one of {GELU_FORMS}, got {gelu!r}")
        self.mlp_dim = mlp_dim
        self.gelu = gelu
        self.dropout_rate = dropout_rate
        self.quantize = quantize
        self.dense_class = fake_quant.QuantizedDense if quantize else FusedDense
        self.dense_0 = self.dense_class(mlp_dim, name="Dense_0")
        self.dense_1 = None  # its width is the input width, known at build time
        self.gelu_quant = fake_quant.maybe_quantizer(quantize, "gelu_quant")
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        self.dense_0.build(input_shape)
        self.dense_1 = self.dense_class(input_shape[-1], name="Dense_1")
        self.dense_1.build(tuple(input_shape[:-1]) + (self.mlp_dim,))
        fake_quant.build_quantizers(self.gelu_quant)

    def call(self, x, training=None):
        x = gelu(self.dense_0(x, training=training), self.gelu)
        x = dropped(self.dropout, fake_quant.apply(self.gelu_quant, x, training), training)
        return dropped(self.dropout, self.dense_1(x, training=training), training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mlp_dim": self.mlp_dim,
            "gelu": self.gelu,
            "dropout_rate": self.dropout_rate,
            "quantize": self.quantize,
        }
