"""Sparse-MLP's block (Lou et al., 2021): a Mixer block whose token and channel MLPs are mixtures of experts,
with the re-represent layers around the token-mixing experts."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import equalization, fake_quant
from keras_mixer.layers.drop_path import DropPath, dropped
from keras_mixer.layers.layer_norm import LayerNorm
from keras_mixer.layers.moe import MixtureOfExperts

REREPRESENT_MODES = (None, "token", "both")


@keras.saving.register_keras_serializable(package="keras_mixer")
class SparseMixerBlock(keras.layers.Layer):
    """On tokens [batch, S, C]:

        x = x + RR_out(MoE_s(RR_in(LayerNorm_0(x))))     MoE_s routes the C1 channel vectors of length S1
        x = x + MoE_c(LayerNorm_1(x))                     MoE_c routes the S tokens of length C

    RR_in = Dense over channels C -> C1 = C·`rerep_channel_factor`, then over tokens S -> S1 = S·`rerep_token_factor`;
    RR_out the reverse (S1 -> S, C1 -> C). `rerep="both"` instead wraps both stages, x = x + RR_out(MoE_c(MoE_s(
    RR_in(LN(x))))) with MoE_c over the S1 re-represented tokens; `rerep=None` drops the re-represent layers.
    Experts have the dense Mixer's hidden widths (`tokens_mlp_dim`, `channels_mlp_dim`). The router, capacity
    and auxiliary-loss options are `MixtureOfExperts`'s. Which of these the paper uses is reconstructed, not
    verified (no official code): see the README's Sparse-MLP notes. With `quantize`, the re-represent layers are
    fake-quantized (input, kernel, output); the mixtures of experts stay float, as every int8 export keeps them.
    """

    def __init__(self, tokens_mlp_dim, channels_mlp_dim, token_experts=4, channel_experts=4, token_k=1, channel_k=2,
                 rerep="token", rerep_token_factor=2.0, rerep_channel_factor=0.5, capacity_factor_train=1.25,
                 capacity_factor_eval=2.0, min_capacity=4, noise_std=None, aux_weight=0.01, batch_prioritized=True,
                 dispatch="sparse", gelu="exact", drop_path_rate=0.0, epsilon=1e-6, quantize=False, **kwargs):
        super().__init__(**kwargs)
        if rerep not in REREPRESENT_MODES:
            raise KerasMixerError(f"rerep must be one of {REREPRESENT_MODES}, got {rerep!r}")
        self.config = dict(
            tokens_mlp_dim=tokens_mlp_dim, channels_mlp_dim=channels_mlp_dim, token_experts=token_experts,
            channel_experts=channel_experts, token_k=token_k, channel_k=channel_k, rerep=rerep,
            rerep_token_factor=rerep_token_factor, rerep_channel_factor=rerep_channel_factor,
            capacity_factor_train=capacity_factor_train, capacity_factor_eval=capacity_factor_eval,
            min_capacity=min_capacity, noise_std=noise_std, aux_weight=aux_weight,
            batch_prioritized=batch_prioritized, dispatch=dispatch, gelu=gelu, drop_path_rate=drop_path_rate,
            epsilon=epsilon, quantize=quantize)
        routing = dict(capacity_factor_train=capacity_factor_train, capacity_factor_eval=capacity_factor_eval,
                       min_capacity=min_capacity, noise_std=noise_std, aux_weight=aux_weight,
                       batch_prioritized=batch_prioritized, dispatch=dispatch, gelu=gelu)
        self.rerep = rerep
        self.norm_0 = LayerNorm(epsilon, name="LayerNorm_0")
        self.token_moe = MixtureOfExperts(token_experts, tokens_mlp_dim, token_k, name="token_moe", **routing)
        self.channel_moe = MixtureOfExperts(channel_experts, channels_mlp_dim, channel_k, name="channel_moe",
                                            **routing)
        self.norm_1 = LayerNorm(epsilon, name="LayerNorm_1") if rerep != "both" else None
        self.drop_path = DropPath(drop_path_rate)

    def build(self, input_shape):
        _, tokens, channels = input_shape
        if tokens is None:
            raise KerasMixerError(f"{self.name}: needs a static token count")
        self.norm_0.build(input_shape)
        if self.rerep:
            mixed_tokens = int(tokens * self.config["rerep_token_factor"])
            mixed_channels = int(channels * self.config["rerep_channel_factor"])
            def dense(units, name):
                return fake_quant.dense(units, self.config["quantize"], name=name)

            self.rerep_in_channels = dense(mixed_channels, "rerep_in_channels")
            self.rerep_in_tokens = dense(mixed_tokens, "rerep_in_tokens")
            self.rerep_out_tokens = dense(tokens, "rerep_out_tokens")
            self.rerep_out_channels = dense(channels, "rerep_out_channels")
            self.rerep_in_channels.build(input_shape)
            self.rerep_in_tokens.build((None, mixed_channels, tokens))
            self.rerep_out_tokens.build((None, mixed_channels, mixed_tokens))
            self.rerep_out_channels.build((None, tokens, mixed_channels))
        else:
            mixed_tokens, mixed_channels = tokens, channels
        self.token_moe.build((None, mixed_channels, mixed_tokens))
        if self.rerep == "both":
            self.channel_moe.build((None, mixed_tokens, mixed_channels))
        else:
            self.norm_1.build(input_shape)
            self.channel_moe.build(input_shape)

    def call(self, x, training=None):
        y = self.norm_0(x)
        if self.rerep:
            y = self.rerep_in_channels(y)
        y = ops.transpose(y, (0, 2, 1))  # [batch, channels, tokens]: token mixing routes channel vectors
        if self.rerep:
            y = self.rerep_in_tokens(y)
        y = self.token_moe(y, training=training)
        if self.rerep == "both":
            y = ops.transpose(self.channel_moe(ops.transpose(y, (0, 2, 1)), training=training), (0, 2, 1))
        if self.rerep:
            y = self.rerep_out_tokens(y)
        y = ops.transpose(y, (0, 2, 1))
        if self.rerep:
            y = self.rerep_out_channels(y)
        x = x + dropped(self.drop_path, y, training)
        if self.rerep == "both":
            return x
        return x + dropped(self.drop_path, self.channel_moe(self.norm_1(x), training=training), training)

    def channel_equalization(self):  # see keras_mixer.layers.equalization
        return {"norm_0": ("rerep_in_channels",) if self.rerep else equalization.TOKEN_MIXING,
                **({"norm_1": equalization.EXPERTS} if self.norm_1 is not None else {})}

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.config}
