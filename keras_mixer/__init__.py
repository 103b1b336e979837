"""keras_mixer: MLP-Mixer and its all-MLP successors for Keras 3."""

from keras_mixer import errors, layers
from keras_mixer.models import *  # noqa: F403 (the public model API, declared once in keras_mixer.models.__all__)
from keras_mixer.models import __all__ as _model_names
from keras_mixer.preprocessing import decode_predictions, imagenet_labels, preprocess_input
from keras_mixer.inference import classify
from keras_mixer.models import HireMLPModel  # noqa: F401 (deprecated name of HireMLP: importable, not exported)

# The training recipes' schedule and loss are serialized into the `.keras` files `train` and `qat` write: register
# them on import, so those files load with plain `keras.models.load_model` after `import keras_mixer`.
from keras_mixer.training import recipe as _recipe  # noqa: F401

__version__ = "0.1.0"

__all__ = sorted([*_model_names, "classify", "decode_predictions", "errors", "imagenet_labels", "layers",
                  "preprocess_input"])
