"""Loading weights into keras_mixer models: local Keras files now; named pretrained checkpoints are a registry to come."""

import os

from keras_mixer.errors import WeightsError

KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".keras")


def default_gelu_for(weights):
    """The GELU form the given weights were trained with: official checkpoints (and our default) use Flax's tanh form."""
    return "tanh"


def load_weights(model, weights):
    """Loads `weights` (a local `.weights.h5` or `.keras` file) into `model`, raising `WeightsError` on any mismatch."""
    path = os.fspath(weights)
    if not path.endswith(KERAS_WEIGHT_SUFFIXES):
        raise WeightsError(
            f"weights={path!r}: expected None or a local file ending in {' or '.join(KERAS_WEIGHT_SUFFIXES)}; "
            "named pretrained weights (e.g. 'imagenet') are not available in this version"
        )
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError) as error:
        raise WeightsError(f"could not load {path} into {model.name!r}: {error}") from error
