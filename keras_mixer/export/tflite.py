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

# Ops an int8 export keeps float32 unless integer_only: the elementwise ops, LayerNorm's statistics and GELU; the
# matmuls and convolutions, where the FLOPs and weights are, stay int8. XNNPACK (LiteRT's CPU delegate) has no int8
# kernels for SQUARED_DIFFERENCE, RSQRT or GELU, nor for the ADD of LayerNorm's tiny epsilon (its scale ratio is out
# of range), so an all-integer Mixer-S/32 splits into 51 delegate partitions with those ops on single-threaded
# builtin kernels between them; with these ops float the whole graph is one XNNPACK partition (see docs/benchmarks.md).
XNNPACK_FLOAT_OPS = ("ADD", "SUB", "MUL", "MEAN", "SQUARED_DIFFERENCE", "RSQRT", "GELU")


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


def _quantize_keeping_float(converter, float_ops, float_nodes):
    """Full-integer conversion with `float_ops` (op types) and `float_nodes` (tensor names) left float32: the
    converter's own two steps (calibrate, then the MLIR quantizer) with the quantizer's denylists, as
    `tf.lite.experimental.QuantizationDebugger` runs them, without the instrumented debug model it also builds
    (which a QAT graph, already quantized by its fake-quant ops, does not allow). Fake-quant ranges of a QAT
    model still decide the ops they surround."""
    from tensorflow.lite.python import convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    return convert.mlir_quantize(
        calibrated, disable_per_channel=converter._experimental_disable_per_channel,
        input_data_type=converter.inference_input_type, output_data_type=converter.inference_output_type,
        denylisted_ops=float_ops or None, denylisted_nodes=float_nodes or None)


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
    integer_only=None,
):
    """Converts a Keras model to a `.tflite` file, written atomically; returns the path.

    Args:
        model: a Keras model with a static input shape (a fake-quant QAT model from
            `keras_mixer.quantization.quantize_model` carries its own ranges).
        path: output file.
        quantization: "float32"; "float16" (fp16 weights); "dynamic" (int8 weights, float activations);
            "int8" / "uint8": int8 weights and activations with integer input and output; see `integer_only`.
        representative_data: [N, H, W, C] preprocessed images for calibrating activation ranges; required for
            "int8"/"uint8" unless the model was trained with fake-quant (QAT), where it fills remaining gaps.
        batch_size: the static batch of the exported graph (1 for phones and the Edge TPU).
        float_io: with "int8"/"uint8", keep float32 input/output (quantize/dequantize inside the model).
        calibration_steps: at most this many batches of `representative_data` are used.
        labels: class names, embedded as labels.txt in the TFLite metadata (read by Android tooling).
        description: model description for the metadata.
        metadata: embed TFLite metadata (input normalization (x - 127.5) / 127.5 as `preprocess_input`, RGB,
            labels); the graph is unchanged.
        integer_only: with "int8"/"uint8", quantize every op, as the Edge TPU, NNAPI and DSPs need. If False,
            the elementwise ops, LayerNorm's statistics and GELU (`XNNPACK_FLOAT_OPS`) stay float32 between the
            int8 matmuls and convolutions, which is what LiteRT's CPU delegate (XNNPACK) runs fastest.
            Default: True for "uint8" (a legacy-accelerator format) and for `edgetpu_model` graphs, False
            otherwise. A QAT model exported without `representative_data` is all-integer (its fake-quant ranges
            cover every tensor).
    """
    import tensorflow as tf

    if quantization not in QUANTIZATION_MODES:
        raise ExportError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
    integer = quantization in ("int8", "uint8")
    if integer_only is None:
        integer_only = quantization == "uint8" or getattr(model, "integer_only_export", False)
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
        # the denylists act at calibration; a QAT model exported without calibration data is all-integer
        keep_float = not integer_only and converter.representative_dataset is not None
        float_nodes = _mixture_of_experts_nodes(static_model) if keep_float else []
        float_ops = list(XNNPACK_FLOAT_OPS) if keep_float else []
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_nodes or float_ops:
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
            if integer and (float_nodes or float_ops):
                flatbuffer = _quantize_keeping_float(converter, float_ops, float_nodes)
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
