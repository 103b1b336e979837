"""The exceptions keras_mixer raises for bad input. Each subclasses ValueError, so generic handlers still work."""


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
