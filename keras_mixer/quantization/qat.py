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
from keras_mixer.layers.nesting import nested_layers
from keras_mixer.preprocessing import preprocessed_images_problem

SCHEMES = ("default_8bit",)
# Keras' plain layers and the fake-quant layers that take their place (same variables); the quantized Dense also
# fake-quantizes its input (`quantize_input`), as the default int8 export quantizes every FULLY_CONNECTED's input
QUANTIZED_FORMS = {"Dense": ("QuantizedDense", {"quantize_input": True}), "Conv2D": ("QuantizedConv2D", {})}


def is_quantized(model):
    return any(isinstance(layer, ActivationQuantizer) for layer in nested_layers(model))


def _quantized_layer_config(layer_config, quantize=True):
    """One layer's config with fake-quant switched on (a plain Dense or Conv2D -> its fake-quant form, a keras_mixer
    layer's `quantize` flag on) or off (the reverse)."""
    entry = copy.deepcopy(layer_config)
    plain = {f"keras_mixer>{name}": (keras_name, options) for keras_name, (name, options) in QUANTIZED_FORMS.items()}
    if quantize and entry.get("class_name") in QUANTIZED_FORMS and entry.get("module", "keras.layers") == "keras.layers":
        name, options = QUANTIZED_FORMS[entry["class_name"]]
        entry.update(module=None, class_name=name, registered_name=f"keras_mixer>{name}")
        entry["config"].update(options)
    elif not quantize and entry.get("registered_name") in plain:
        name, options = plain[entry["registered_name"]]
        entry.update(module="keras.layers", class_name=name, registered_name=None)
        for option in options:
            entry["config"].pop(option, None)
    elif str(entry.get("registered_name", "")).startswith("keras_mixer>") and "quantize" in entry["config"]:
        entry["config"]["quantize"] = quantize
    return entry


def float_layers(model):
    """(layer path, class of the top-level layer that holds it) of every Dense or convolution of `model` that computes
    without fake-quant: what a QAT copy must not have. Layers the int8 export keeps float (`float_in_int8_export`:
    a mixture of experts) are passed over, with everything inside them."""
    found = []
    for layer in model.layers:
        exempt = {id(inner) for outer in nested_layers(layer)
                  if getattr(outer, "float_in_int8_export", False) for inner in nested_layers(outer)}
        for inner in nested_layers(layer):
            if (isinstance(inner, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv1D))
                    and id(inner) not in exempt
                    and not any(isinstance(quantizer, ActivationQuantizer) for quantizer in nested_layers(inner))):
                found.append((inner.path, type(layer).__name__))
    return found


def _rebuild(model, quantize):
    """`model`'s config with every layer's fake-quant set to `quantize`, with `model`'s weights copied by path."""
    config = model.get_config()
    config["layers"] = [_quantized_layer_config(entry, quantize) for entry in config["layers"]]
    rebuilt = keras.Model.from_config(config)
    source_weights = {v.path: v for v in model.weights}
    for variable in rebuilt.weights:
        if variable.path in source_weights:
            variable.assign(source_weights[variable.path])
    return rebuilt, sorted(set(v.path for v in rebuilt.weights) - set(source_weights))


def quantize_model(model, scheme="default_8bit", calibration_data=None, batch_size=32, verbose=0):
    """Returns a QAT copy of `model` (a functional model of keras_mixer layers), with `model`'s weights.

    Scheme "default_8bit" (tfmot's conventions): 8-bit asymmetric activations with moving-average ranges,
    symmetric narrow-range weights, per-channel for the conv stem, per-tensor for Dense kernels.
    Fine-tune it with `compile` + `fit` like the float model. `calibration_data` (preprocessed images) sets the
    activation ranges before training, so the QAT model is usable (and evaluable) from the start.
    """
    if scheme not in SCHEMES:
        raise KerasMixerError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations_by_depth"):
        raise KerasMixerError(f"quantize_model needs a functional keras.Model (as keras_mixer's builders return), got "
                              f"{type(model).__name__}")
    if is_quantized(model):
        raise KerasMixerError(f"model {model.name!r} is already quantization-aware")
    qat, _ = _rebuild(model, quantize=True)
    missing = sorted({v.path for v in model.weights} - {v.path for v in qat.weights})
    if missing:
        raise KerasMixerError(f"quantize_model lost weights {missing[:5]}: a layer type it does not know?")
    unquantized = float_layers(qat)
    if unquantized:
        path, holder = unquantized[0]
        raise KerasMixerError(f"quantize_model: layer class {holder} holds {path} ({len(unquantized)} Dense or "
                              f"convolution layer(s) in all) and has no fake-quant (no `quantize` flag): its QAT copy "
                              "would train them in float. Give the class a `quantize` flag that builds its Dense "
                              "layers with keras_mixer.layers.fake_quant.dense")
    if calibration_data is not None:
        calibrate(qat, calibration_data, batch_size, verbose=verbose)
    return qat


def strip_quantization(qat_model):
    """The float model a QAT model was made from (same config with fake-quant off, QuantizedDense -> Dense),
    carrying the QAT model's fine-tuned weights; the fake-quant ranges are dropped. The inverse of
    `quantize_model`; `to_tflite` exports QAT models through it for LiteRT's CPU delegate."""
    if not is_quantized(qat_model):
        raise KerasMixerError(f"model {qat_model.name!r} has no fake-quant layers to strip")
    stripped, unset = _rebuild(qat_model, quantize=False)
    if is_quantized(stripped):
        kept = [layer.path for layer in nested_layers(stripped) if isinstance(layer, ActivationQuantizer)]
        raise KerasMixerError(f"strip_quantization could not remove the fake-quant layers {kept[:5]}")
    if unset:
        raise KerasMixerError(f"strip_quantization left {unset[:5]} uninitialized: a layer type it does not know?")
    return stripped


def calibrate(qat_model, images, batch_size=32, steps=None, verbose=1):
    """Sets activation ranges from `images`, with a progress bar unless verbose=0. The forward passes run in
    inference mode (BatchNorm on its moving statistics, no dropout or stochastic depth: the activations the model
    computes when it is used) with the quantizers told to move their ranges; every other variable is put back
    bit for bit afterwards, so the QAT copy computes the float model's function from its first step."""
    problem = preprocessed_images_problem(images, qat_model.input_shape[1:])
    if problem:
        raise KerasMixerError(f"calibration_data {problem}: pass preprocessed images (keras_mixer.preprocess_input "
                              "gives [-1, 1])")
    images = np.asarray(images, np.float32)
    batches = range(0, len(images), batch_size)[:steps]
    quantizers = [layer for layer in nested_layers(qat_model) if isinstance(layer, ActivationQuantizer)]
    ranges = {id(variable) for quantizer in quantizers for variable in quantizer.variables}
    kept = [(variable, keras.ops.convert_to_numpy(variable)) for variable in qat_model.variables
            if id(variable) not in ranges]
    progress = keras.utils.Progbar(len(batches), verbose=verbose, unit_name="batch") if verbose else None
    for quantizer in quantizers:
        quantizer.calibrating = True
    try:
        for i, start in enumerate(batches):
            qat_model(images[start : start + batch_size], training=False)
            if progress:
                progress.update(i + 1)
    finally:
        for quantizer in quantizers:
            quantizer.calibrating = False
    for variable, value in kept:
        variable.assign(value)
    return qat_model
