"""The normalization a checkpoint was trained on, applied to `keras_mixer.preprocess_input`'s [-1, 1] inputs.

Every keras_mixer model takes `preprocess_input(pixels)` = pixels / 127.5 - 1. A checkpoint trained on another
normalization, `(pixels / 255 - mean) / std` per RGB channel (timm's convention, in which the authors state theirs),
sees x = z / (2 std) + (0.5 - mean) / std of our z: a per-channel affine map. Where the stem is an unpadded
convolution that map is folded into its weights (`fold_into_stem`, exact); a padded stem pads with zeros *after*
the authors' normalization, so there the map stays an explicit `InputNormalization` step before the stem.
"""

import keras
import numpy as np
from keras import ops

from keras_mixer.errors import KerasMixerError

# (mean, std) per RGB channel, on pixels scaled to [0, 1]
INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # [-1, 1]: preprocess_input itself (the official Mixer's inputs)
UNIT_RANGE = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # [0, 1]
IMAGENET_DEFAULT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm's IMAGENET_DEFAULT_MEAN / _STD


def check_normalization(normalization, channels=3, what="checkpoint_normalization"):
    """`normalization` as ((mean, ...), (std, ...)) tuples of floats, one per input channel; ValueError otherwise."""
    try:
        mean, std = (tuple(float(v) for v in values) for values in normalization)
    except (TypeError, ValueError):
        raise KerasMixerError(f"{what} must be (mean, std), each a sequence of {channels} floats in [0, 1] pixel units "
                         f"(timm's convention), got {normalization!r}") from None
    if len(mean) != channels or len(std) != channels:
        raise KerasMixerError(f"{what} must give {channels} means and {channels} stds (one per input channel), got "
                         f"{len(mean)} and {len(std)}")
    if not all(np.isfinite(mean)) or not all(np.isfinite(std) & (np.asarray(std) > 0)):
        raise KerasMixerError(f"{what}: means must be finite and stds finite and positive, got {normalization!r}")
    return mean, std


def affine_from_ours(normalization):
    """(scale, offset): the checkpoint's input is z * scale + offset of our [-1, 1] input z, per channel."""
    mean, std = (np.asarray(v, np.float64) for v in normalization)
    return (1.0 / (2.0 * std)).astype(np.float32), ((0.5 - mean) / std).astype(np.float32)


def fold_into_stem(kernel, bias, normalization):
    """(kernel, bias) of an unpadded convolution (HWIO kernel) that takes our inputs where the original took the
    checkpoint's: conv(z * s + o) = (K * s) conv z + (b + Σ_hwc o_c K[h, w, c, :]). Exact at every position."""
    scale, offset = affine_from_ours(normalization)
    kernel = np.asarray(kernel, np.float64)
    folded_bias = np.asarray(bias, np.float64) + np.einsum("hwco,c->o", kernel, offset.astype(np.float64))
    return (kernel * scale[:, None].astype(np.float64)).astype(np.float32), folded_bias.astype(np.float32)


@keras.saving.register_keras_serializable(package="keras_mixer")
class InputNormalization(keras.layers.Layer):
    """Maps `preprocess_input`'s [-1, 1] images (NHWC, whatever `image_data_format()` says) onto the normalization
    `(pixels / 255 - mean) / std` a checkpoint was trained on: one multiply and one add per channel (MUL + ADD in
    TFLite, both int8 and Edge TPU ops). `mean` and `std` are in the config, so `.keras` files keep the step."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean, self.std = check_normalization((mean, std), len(mean), "InputNormalization")
        self.scale, self.offset = affine_from_ours((self.mean, self.std))

    def build(self, input_shape):
        if input_shape[-1] != len(self.mean):
            raise KerasMixerError(f"InputNormalization {self.name!r} normalizes {len(self.mean)} channels; the input "
                                  f"has {input_shape[-1]} (channels last)")

    def call(self, images):
        return images * ops.cast(self.scale, images.dtype) + ops.cast(self.offset, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}
