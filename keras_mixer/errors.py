"""The exceptions keras_mixer raises for bad input (each subclasses ValueError, so generic handlers still work), and
the two tests of a number that its checks share."""

import math
import numbers


class KerasMixerError(ValueError):
    """Base class: something given to keras_mixer (a file, a name, a shape) is not what it must be."""


class WeightsError(KerasMixerError):
    """A weights file or tag cannot be loaded into the model (missing, unknown, wrong keys or shapes)."""


class ExportError(KerasMixerError):
    """A model cannot be exported, or an exported file cannot be read or run."""


class TrainingError(KerasMixerError):
    """A training or evaluation run is misconfigured: unknown model, dataset, strategy, recipe or option."""


class DataError(KerasMixerError):
    """A dataset or an image cannot be found or read: unknown name, empty folder, missing download, bad file."""


def is_whole_number(value):
    """An int, NumPy's included, never a bool: Python counts True as 1, which no one means as a count or a size."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value):
    """A finite int or float, NumPy's included, never a bool: a flag given where a rate or a fraction belongs."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
