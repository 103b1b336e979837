"""Keras model -> `.tflite`, with static shapes and the quantization modes phones and the Edge TPU need."""

import contextlib
import io
import os
import warnings

import numpy as np

from keras_mixer.errors import ExportError
from keras_mixer.export.metadata import add_metadata
from keras_mixer.io_utils import atomic_path

QUANTIZATION_MODES = ("float32", "float16", "dynamic", "int8", "uint8")


def _static_batch_model(model, batch_size):
    """The same model with a fixed batch: a dynamic batch dim adds SHAPE/GATHER/PACK ops to the graph."""
    import keras

    shape = tuple(model.input_shape[1:])
    if any(dim is None for dim in shape):
        raise ExportError(
            f"model {model.name!r} has a dynamic input shape {model.input_shape}; rebuild it with a fixed "
            "input_shape (the token count must be static anyway)"
        )
    images = keras.Input(shape, batch_size=batch_size, name="images")
    return keras.Model(images, model(images, training=False), name=model.name)


def _mixture_of_experts_nodes(model):
    """Names of the graph nodes inside the model's mixture-of-experts layers, kept float in integer exports:
    measured on a digits Sparse-MLP, int8 routing flips 27 % of the top-k expert choices and the int8 model agrees
    with Keras on 83 % of argmaxes; with these nodes float (the rest int8) on 99 %."""
    import re

    import tensorflow as tf

    from keras_mixer.layers.moe import MixtureOfExperts

    names = [layer.name for layer in model._flatten_layers() if isinstance(layer, MixtureOfExperts)]
    if not names:
        return []
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    pattern = re.compile("|".join(rf"/{re.escape(name)}(_\d+)?/" for name in names))
    tensors = tf.lite.Interpreter(model_content=flatbuffer).get_tensor_details()
    return sorted({t["name"] for t in tensors if pattern.search(t["name"])})


def _representative_dataset(representative_data, batch_size, limit):
    if representative_data is None:
        return None
    samples = np.asarray(representative_data, dtype=np.float32)
    if samples.ndim != 4:
        raise ExportError(f"representative_data must be [N, H, W, C] preprocessed images, got shape {samples.shape}")
    samples = samples[: limit * batch_size]
    usable = len(samples) - len(samples) % batch_size
    if usable == 0:
        raise ExportError(f"representative_data has {len(samples)} images, fewer than one batch of {batch_size}")
    return lambda: ([samples[i : i + batch_size]] for i in range(0, usable, batch_size))


def to_tflite(
    model,
    path,
    quantization="int8",
    representative_data=None,
    batch_size=1,
    float_io=False,
    calibration_steps=200,
    labels=None,
    description=None,
    metadata=True,
):
    """Converts a Keras model to a `.tflite` file, written atomically; returns the path.

    Args:
        model: a Keras model with a static input shape (a fake-quant QAT model from
            `keras_mixer.quantization.quantize_model` carries its own ranges).
        path: output file.
        quantization: "float32"; "float16" (fp16 weights); "dynamic" (int8 weights, float activations);
            "int8" / "uint8": full integer with integer input and output (what the Edge TPU and NNAPI need).
        representative_data: [N, H, W, C] preprocessed images for calibrating activation ranges; required for
            "int8"/"uint8" unless the model was trained with fake-quant (QAT), where it fills remaining gaps.
        batch_size: the static batch of the exported graph (1 for phones and the Edge TPU).
        float_io: with "int8"/"uint8", keep float32 input/output (quantize/dequantize inside the model).
        calibration_steps: at most this many batches of `representative_data` are used.
        labels: class names, embedded as labels.txt in the TFLite metadata (read by Android tooling).
        description: model description for the metadata.
        metadata: embed TFLite metadata (input normalization (x - 127.5) / 127.5 as `preprocess_input`, RGB,
            labels); the graph is unchanged.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATION_MODES:
        raise ExportError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
    integer = quantization in ("int8", "uint8")
    has_fake_quant = any(getattr(layer, "is_fake_quant", False) for layer in model._flatten_layers())
    if integer and representative_data is None and not has_fake_quant:
        raise ExportError(
            f"quantization={quantization!r} needs representative_data (a few hundred preprocessed training images) "
            "to calibrate activation ranges, or a QAT model from keras_mixer.quantization.quantize_model"
        )
    from keras_mixer.models.sparse_mlp import with_dispatch

    model = with_dispatch(model, "dense")  # mixtures of experts export in their static-shape form
    static_model = _static_batch_model(model, batch_size)
    converter = tf.lite.TFLiteConverter.from_keras_model(static_model)
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if integer:
        converter.representative_dataset = _representative_dataset(representative_data, batch_size, calibration_steps)
        float_nodes = _mixture_of_experts_nodes(static_model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_nodes:
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        if not float_io:
            io_type = tf.int8 if quantization == "int8" else tf.uint8
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    try:
        # the converter prints its SavedModel signature to stdout and warns about the integer input's range
        # (which it sets from the calibration data); neither is actionable for the user
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            if integer and float_nodes:
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=converter.representative_dataset,
                    debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=float_nodes))
                flatbuffer = debugger.get_nondebug_quantized_model()
            else:
                flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError / RuntimeError with the MLIR diagnostics
        raise ExportError(f"TFLite conversion of {model.name!r} ({quantization}) failed: {error}") from error
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        if metadata:
            add_metadata(tmp, model.name, description or f"{model.name}, {quantization} TFLite export by keras_mixer",
                         labels=labels)
    return path
