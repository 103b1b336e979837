"""The MLP-Mixer block: token mixing across patches, then channel mixing within each patch."""

import keras
from keras import ops

from keras_mixer.layers.drop_path import DropPath
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.mlp import MlpBlock


@keras.saving.register_keras_serializable(package="keras_mixer")
class MixerBlock(keras.layers.Layer):
    """Pre-norm Mixer block on tokens of shape [batch, tokens, channels] (Tolstikhin et al., 2021, eq. 1):

        U = X + W2 · GELU(W1 · LayerNorm(X)ᵀ)ᵀ       (token mixing, shared across channels)
        Y = U + GELU(LayerNorm(U) · W3) · W4          (channel mixing, shared across tokens)

    Sub-layer names follow the official Flax module (`LayerNorm_0`, `token_mixing`, `LayerNorm_1`, `channel_mixing`).
    """

    def __init__(
        self,
        tokens_mlp_dim,
        channels_mlp_dim,
        gelu="tanh",
        drop_path_rate=0.0,
        dropout_rate=0.0,
        epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tokens_mlp_dim = tokens_mlp_dim
        self.channels_mlp_dim = channels_mlp_dim
        self.gelu = gelu
        self.drop_path_rate = drop_path_rate
        self.dropout_rate = dropout_rate
        self.epsilon = epsilon
        self.norm_0 = LayerNorm(epsilon, name="LayerNorm_0")
        self.token_mixing = MlpBlock(tokens_mlp_dim, gelu, dropout_rate, name="token_mixing")
        self.norm_1 = LayerNorm(epsilon, name="LayerNorm_1")
        self.channel_mixing = MlpBlock(channels_mlp_dim, gelu, dropout_rate, name="channel_mixing")
        self.drop_path = DropPath(drop_path_rate)

    def build(self, input_shape):
        _, tokens, channels = input_shape
        if tokens is None:
            raise ValueError("MixerBlock needs a static token count: the token-mixing MLP's width is the token count")
        self.norm_0.build(input_shape)
        self.token_mixing.build((None, channels, tokens))
        self.norm_1.build(input_shape)
        self.channel_mixing.build(input_shape)

    def call(self, x, training=None):
        mixed = ops.transpose(self.norm_0(x), (0, 2, 1))
        mixed = ops.transpose(self.token_mixing(mixed, training=training), (0, 2, 1))
        x = x + self.drop_path(mixed, training=training)
        mixed = self.channel_mixing(self.norm_1(x), training=training)
        return x + self.drop_path(mixed, training=training)

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
        }
