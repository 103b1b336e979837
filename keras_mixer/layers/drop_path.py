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
        self.built = True  # stateless: a block that skips calling it (`dropped`) leaves no unbuilt layer behind

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


def dropped(layer, x, training):
    """`layer(x, training=training)` for a `DropPath` or `keras.layers.Dropout`, or `x` itself, without calling the
    layer, when it is the identity for this call (rate 0, or not training). Why: on eager torch Keras'
    `Layer.__call__` costs about 0.1 ms of host time even for an identity, and a Mixer block has six such calls: a
    12-block Mixer's forward took 18 ms of host time with them and 13 ms without, its training step 26-30 ms and 23 ms
    (width 32, batch 8, bf16, one CPU core), time the host spends instead of keeping the GPU fed."""
    if not training or not layer.rate:
        return x
    return layer(x, training=training)
