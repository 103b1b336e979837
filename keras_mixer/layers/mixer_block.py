"""The MLP-Mixer block: token mixing across patches, then channel mixing within each patch."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mlp import MlpBlock


@keras.saving.register_keras_serializable(package="keras_mixer")
class MixerBlock(keras.layers.Layer):
    """Pre-norm Mixer block on tokens of shape [batch, tokens, channels] (Tolstikhin et al., 2021, eq. 1):

        U = X + W2 · GELU(W1 · LayerNorm(X)ᵀ)ᵀ       (token mixing, shared across channels)
        Y = U + GELU(LayerNorm(U) · W3) · W4          (channel mixing, shared across tokens)

    Sub-layer names follow the official Flax module (`LayerNorm_0`, `token_mixing`, `LayerNorm_1`, `channel_mixing`).
    With `quantize`, every sub-layer and both residual sums are fake-quantized (quantization-aware training).
    """

    def __init__(
        self,
        tokens_mlp_dim,
        channels_mlp_dim,
        gelu="tanh",
        drop_path_rate=0.0,
        dropout_rate=0.0,
        epsilon=1e-6,
        quantize=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tokens_mlp_dim = tokens_mlp_dim
        self.channels_mlp_dim = channels_mlp_dim
        self.gelu = gelu
        self.drop_path_rate = drop_path_rate
        self.dropout_rate = dropout_rate
        self.epsilon = epsilon
        self.quantize = quantize
        self.norm_0 = LayerNorm(epsilon, quantize, name="LayerNorm_0")
        self.token_mixing = MlpBlock(tokens_mlp_dim, gelu, dropout_rate, quantize, name="token_mixing")
        self.norm_1 = LayerNorm(epsilon, quantize, name="LayerNorm_1")
        self.channel_mixing = MlpBlock(channels_mlp_dim, gelu, dropout_rate, quantize, name="channel_mixing")
        self.drop_path = DropPath(drop_path_rate)
        self.token_residual_quant = fake_quant.maybe_quantizer(quantize, "token_residual_quant")
        self.channel_residual_quant = fake_quant.maybe_quantizer(quantize, "channel_residual_quant")

    def build(self, input_shape):
        _, tokens, channels = input_shape
        if tokens is None:
            raise KerasMixerError("MixerBlock needs a static token count: the token-mixing MLP's width is the token count")
        self.norm_0.build(input_shape)
        self.token_mixing.build((None, channels, tokens))
        self.norm_1.build(input_shape)
        self.channel_mixing.build(input_shape)
        fake_quant.build_quantizers(self.token_residual_quant, self.channel_residual_quant)

    def call(self, x, training=None):
        mixed = ops.transpose(self.norm_0(x, training=training), (0, 2, 1))
        mixed = ops.transpose(self.token_mixing(mixed, training=training), (0, 2, 1))
        x = fake_quant.apply(self.token_residual_quant, x + dropped(self.drop_path, mixed, training), training)
        mixed = self.channel_mixing(self.norm_1(x, training=training), training=training)
        return fake_quant.apply(self.channel_residual_quant, x + dropped(self.drop_path, mixed, training), training)

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm_1": ("channel_mixing.dense_0",), "norm_0": equalization.TOKEN_MIXING}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "tokens_mlp_dim": self.tokens_mlp_dim,
            "channels_mlp_dim": self.channels_mlp_dim,
            "gelu": self.gelu,
            "drop_path_rate": self.drop_path_rate,
            "dropout_rate": self.dropout_rate,
            "epsilon": self.epsilon,
            "quantize": self.quantize,
        }
