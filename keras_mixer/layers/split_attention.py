"""Split-attention reweighting (ResNeSt-style), shared by the branch-mixing MLPs of Vision Permutator and Hire-MLP."""

import keras
from keras import ops

from keras_mixer.layers import fake_quant
from keras_mixer.layers.mlp import gelu


@keras.saving.register_keras_serializable(package="keras_mixer")
class SplitAttention(keras.layers.Layer):
    """Weighs `n` same-shape NHWC branches per channel: a = mean over H, W of their sum; fc1 (C -> C/4), exact
    GELU, fc2 (C/4 -> n·C) read as [C, n] (the n weights of one channel adjacent, as the official `reshape(B, C, n)`),
    softmax over the n; returns Σ branch_i · a_i. Sub-layers `fc1` / `fc2` as the official `reweight` Mlp. With
    `quantize`, fc1 and fc2 are fake-quantized."""

    def __init__(self, quantize=False, **kwargs):
        super().__init__(**kwargs)
        self.quantize = quantize

    def build(self, input_shape):
        channels, self.branches = input_shape[0][-1], len(input_shape)
        self.fc1 = fake_quant.dense(channels // 4, self.quantize, name="fc1")
        self.fc2 = fake_quant.dense(self.branches * channels, self.quantize, name="fc2")
        self.fc1.build((None, channels))
        self.fc2.build((None, channels // 4))

    def call(self, branches):
        channels = branches[0].shape[-1]
        a = ops.mean(sum(branches[1:], branches[0]), axis=(1, 2))
        a = self.fc2(gelu(self.fc1(a), "exact"))
        a = ops.softmax(ops.reshape(a, (-1, 1, 1, channels, self.branches)), axis=-1)
        return sum(branch * a[..., i] for i, branch in enumerate(branches))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "quantize": self.quantize}
