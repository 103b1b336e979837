"""Stochastic depth: drop a whole residual branch per sample."""

import keras
from keras import ops

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import host_seeds


@keras.saving.register_keras_serializable(package="keras_mixer")
class DropPath(keras.layers.Layer):
    """Zeroes the input for a random subset of samples during training and rescales the rest by 1/(1-rate).

    Applied to a residual branch, this is stochastic depth (Huang et al., 2016) as used by timm and big_vision.
    At inference (or with rate 0) it is the identity, so it adds no op to an exported graph.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise KerasMixerError(f"DropPath rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.seed = seed
        self.seed_generator = host_seeds.seed_generator(seed)  # no device sync per draw on torch (see there)

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask_shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        kept = host_seeds.uniform(mask_shape, self.seed_generator, like=x) < keep
        # a multiply by the 0/1 mask instead of a `where` against a zeros tensor: one pass over the branch fewer,
        # bit-identical values (x / keep is rounded as before)
        return x / keep * ops.cast(kept, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
