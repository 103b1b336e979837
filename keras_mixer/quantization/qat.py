"""`quantize_model`: the same architecture with fake-quant in its forward pass, initialized from a float model.

Our layers take a serializable `quantize` flag (as Keras' own layers carry their quantization mode), so the QAT
model is the float model's config with `quantize=True` on each of them and every plain `Dense` replaced by
`QuantizedDense`. Float weights keep their paths and copy over; the new variables are the activation ranges.
A QAT model saves and loads as `.keras` like any other and exports with `keras_mixer.export.to_tflite`.
"""

import copy

import keras
import numpy as np

from keras_mixer.errors import KerasMixerError
from keras_mixer.layers.fake_quant import ActivationQuantizer

SCHEMES = ("default_8bit",)
_DENSE = {"module": "keras.layers", "class_name": "Dense"}
_QUANTIZED_DENSE = {"module": None, "class_name": "QuantizedDense", "registered_name": "keras_mixer>QuantizedDense"}


def is_quantized(model):
    return any(isinstance(layer, ActivationQuantizer) for layer in model._flatten_layers())


def _quantized_layer_config(layer_config):
    entry = copy.deepcopy(layer_config)
    if entry.get("class_name") == "Dense" and entry.get("module", "keras.layers") == "keras.layers":
        entry.update(_QUANTIZED_DENSE)
    elif str(entry.get("registered_name", "")).startswith("keras_mixer>") and "quantize" in entry["config"]:
        entry["config"]["quantize"] = True
    return entry


def quantize_model(model, scheme="default_8bit", calibration_data=None, batch_size=32):
    """Returns a QAT copy of `model` (a functional model of keras_mixer layers), with `model`'s weights.

    Scheme "default_8bit" (tfmot's conventions): 8-bit asymmetric activations with moving-average ranges,
    symmetric narrow-range weights, per-channel for the conv stem, per-tensor for Dense kernels.
    Fine-tune it with `compile` + `fit` like the float model. `calibration_data` (preprocessed images) sets the
    activation ranges before training, so the QAT model is usable (and evaluable) from the start.
    """
    if scheme not in SCHEMES:
        raise KerasMixerError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if is_quantized(model):
        raise KerasMixerError(f"model {model.name!r} is already quantization-aware")
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations_by_depth"):
        raise KerasMixerError("quantize_model needs a functional keras.Model (as keras_mixer's builders return)")
    config = model.get_config()
    config["layers"] = [_quantized_layer_config(entry) for entry in config["layers"]]
    qat = keras.Model.from_config(config)
    float_weights = {v.path: v for v in model.weights}
    for variable in qat.weights:
        if variable.path in float_weights:
            variable.assign(float_weights[variable.path])
    missing = sorted(set(float_weights) - {v.path for v in qat.weights})
    if missing:
        raise KerasMixerError(f"quantize_model lost weights {missing[:5]}: a layer type it does not know?")
    if calibration_data is not None:
        calibrate(qat, calibration_data, batch_size)
    return qat


def calibrate(qat_model, images, batch_size=32, steps=None):
    """Sets activation ranges from `images` (forward passes in training mode; no weight is changed)."""
    images = np.asarray(images, np.float32)
    batches = range(0, len(images), batch_size)
    for i, start in enumerate(batches):
        if steps is not None and i >= steps:
            break
        qat_model(images[start : start + batch_size], training=True)
    return qat_model
