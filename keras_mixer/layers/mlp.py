"""The two-layer MLP every Mixer-family block is made of."""

import keras
from keras import ops

GELU_FORMS = ("tanh", "exact")


def gelu(x, form):
    """GELU in the named form: "tanh" (Flax's default, what the official Mixer checkpoints use) or "exact" (erf, timm)."""
    if form not in GELU_FORMS:
        raise ValueError(f"gelu form must be one of {GELU_FORMS}, got {form!r}")
    return ops.gelu(x, approximate=form == "tanh")


@keras.saving.register_keras_serializable(package="keras_mixer")
class MlpBlock(keras.layers.Layer):
    """Dense(mlp_dim) -> GELU -> Dense(back to the input width), with optional dropout after each (as timm's `Mlp`).

    Sub-layers are named `Dense_0` / `Dense_1` like the official Flax module, so checkpoint keys map by name.
    """

    def __init__(self, mlp_dim, gelu="tanh", dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        if gelu not in GELU_FORMS:
            raise ValueError(f"gelu form must be one of {GELU_FORMS}, got {gelu!r}")
        self.mlp_dim = mlp_dim
        self.gelu = gelu
        self.dropout_rate = dropout_rate
        self.dense_0 = keras.layers.Dense(mlp_dim, name="Dense_0")
        self.dense_1 = None  # its width is the input width, known at build time
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, input_shape):
        self.dense_0.build(input_shape)
        self.dense_1 = keras.layers.Dense(input_shape[-1], name="Dense_1")
        self.dense_1.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, x, training=None):
        x = self.dropout(gelu(self.dense_0(x), self.gelu), training=training)
        return self.dropout(self.dense_1(x), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "mlp_dim": self.mlp_dim,
            "gelu": self.gelu,
            "dropout_rate": self.dropout_rate,
        }
