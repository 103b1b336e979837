"""Keras model -> `.tflite`, with static shapes and the quantization modes phones and the Edge TPU need."""

import collections.abc
import contextlib
import functools
import gc
import io
import os
import re
import sys
import tempfile
import warnings

import numpy as np

from keras_mixer.errors import ExportError, KerasMixerError, is_whole_number
from keras_mixer.export import blockwise, quantization_report
from keras_mixer.export.calibration import narrow_ranges
from keras_mixer.export.edgetpu_model import edgetpu_form
from keras_mixer.export.flatbuffer import (calibrate_only, join, mlir_quantize, per_tensor_kernels, quantize_settings,
                                          read_graph)
from keras_mixer.export.metadata import add_metadata, check_labels
from keras_mixer.export.plan import ExportOptions, ModelFacts, plan_export
from keras_mixer.io_utils import atomic_path, native_stderr_quiet, require_output_file, write_text
from keras_mixer.layers.nesting import nested_layers
from keras_mixer.models.applications import output_activation
from keras_mixer.preprocessing import preprocessed_images_problem

# The int8 range of the logits spans the calibration images' logits widened by this share of their span on each
# side: calibrated to the exact extremes, 0.6-9 % of the digits test images had a logit clipped at +127 (their
# softmax scores then wrong); with 25 % headroom none, for a 1.5x coarser logit step.
LOGIT_HEADROOM = 0.25


def static_image_shape(model):
    """The (H, W, C) every image given to `model` has; a dynamic one is refused (no static graph to convert)."""
    shape = tuple(model.input_shape[1:])
    if any(dim is None for dim in shape):
        raise ExportError(
            f"model {model.name!r} has a dynamic input shape {model.input_shape}; rebuild it with a fixed "
            "input_shape (the token count must be static anyway)"
        )
    return shape


def _static_batch_model(model, batch_size):
    """The same model with a fixed batch: a dynamic batch dim adds SHAPE/GATHER/PACK ops to the graph."""
    import keras

    images = keras.Input(static_image_shape(model), batch_size=batch_size, name="images")
    return keras.Model(images, model(images, training=False), name=model.name)


def _inference_function(model):
    """The model's inference call traced at its own static shape, batch included (a dynamic batch would add
    SHAPE/GATHER/PACK ops), and a module holding the variables it reads: what a SavedModel of it needs.

    TensorFlow's `from_keras_model` writes the same SavedModel through Keras' `ExportArchive`, which walks every
    layer's trackables first: 80 % of a small model's int8 export (8 of 10 s for a Hire-MLP of the tests). The
    traced function and its variables alone convert to the same graph, op for op and tensor for tensor (only the
    output tensors' names change, `StatefulPartitionedCall_1:0` to `StatefulPartitionedCall:0`), in half the
    time or less (tests/test_export.py compares both)."""
    import tensorflow as tf

    serve = tf.function(lambda images: model(images, training=False), autograph=False,
                        input_signature=[tf.TensorSpec(model.input_shape, tf.float32, name=model.inputs[0].name)])
    function = serve.get_concrete_function()
    holder = tf.Module()
    holder.variables_read = list(function.variables)
    return function, holder


def _converter(model, scratch=None):
    """A TFLiteConverter for `model`: from its traced inference function in memory, or through a SavedModel of
    it written under `scratch` (the saved_model route), which the converter reads after the model is gone."""
    import tensorflow as tf

    function, holder = _inference_function(model)
    if scratch is None:
        return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    saved = os.path.join(scratch, "saved_model")
    with _converter_quiet():
        tf.saved_model.save(holder, saved, signatures={"serving_default": function})
    return tf.lite.TFLiteConverter.from_saved_model(saved)


def _mixture_of_experts_nodes(model):
    """Names of the graph nodes inside the model's mixture-of-experts layers, kept float in integer exports:
    measured on a digits Sparse-MLP, int8 routing flips 27 % of the top-k expert choices and the int8 model agrees
    with Keras on 83 % of argmaxes; with these nodes float (the rest int8) on 99 %."""
    from keras_mixer.layers.moe import MixtureOfExperts

    names = [layer.name for layer in nested_layers(model) if isinstance(layer, MixtureOfExperts)]
    if not names:
        return []
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = _converter(model).convert()
    pattern = re.compile("|".join(rf"/{re.escape(name)}(_\d+)?/" for name in names))
    tensors = {tensor.name for op in read_graph(f"{model.name}.tflite", flatbuffer) for tensor in op.inputs + op.outputs}
    return sorted(name for name in tensors if pattern.search(name))


def check_output_paths(path, report=None):
    """ExportError unless `path` names a `.tflite` file and `report` (if given) a `.json` one: a flatbuffer written
    as `model.keras` would replace the model it was exported from."""
    require_output_file(path, ".tflite", "export writes a TFLite flatbuffer", ExportError)
    if report is not None:
        require_output_file(report, ".json", "the quantization report is JSON", ExportError)


def calibration_array(representative_data, input_shape, samples=256):
    """Preprocessed calibration images [N, H, W, C] float32 for a model taking `input_shape` (H, W, C), from an
    array, a tf.data.Dataset, an iterator, or a function returning one (TFLiteConverter's `representative_dataset`)
    of images, batches or (images, labels), at most `samples` images from those; or from a source name
    (`keras_mixer.datasets.load_source`: its training split through the evaluation transform). Anything else, or
    images that are not preprocessed for this model, is refused (`preprocessed_images_problem`)."""
    import tensorflow as tf

    from keras_mixer.datasets import ImageSource, calibration_images

    if isinstance(representative_data, (str, os.PathLike, ImageSource)):
        print(f"reading {samples} calibration images from {representative_data}")
        return calibration_images(representative_data, tuple(input_shape[:2]), samples)
    if callable(representative_data):
        representative_data = representative_data()
    if isinstance(representative_data, (tf.data.Dataset, collections.abc.Iterator)):
        representative_data = _first_images(representative_data, input_shape, samples)
    problem = preprocessed_images_problem(representative_data, input_shape)
    if problem:
        raise ExportError(f"representative_data {problem}: pass preprocessed float images (keras_mixer."
                          "preprocess_input gives [-1, 1]), or a dataset name or image folder, which is preprocessed "
                          "and resized as evaluation preprocesses it")
    return np.asarray(representative_data, np.float32)


def _first_images(elements, input_shape, samples):
    """The first `samples` images of an iterable of images, batches or (images, labels) pairs, as one array."""
    batches, count = [], 0
    for element in elements:
        images = np.asarray(element[0] if isinstance(element, (tuple, list)) else element)
        batch = images[None] if images.ndim == 3 else images
        problem = preprocessed_images_problem(batch, input_shape)
        if problem:
            raise ExportError(f"representative_data {problem} (its element {len(batches)}): pass preprocessed float "
                              "images (keras_mixer.preprocess_input gives [-1, 1])")
        batches.append(batch)
        count += len(batch)
        if count >= samples:
            break
    if not batches:
        raise ExportError("representative_data holds no images (an empty dataset or iterator)")
    return np.concatenate(batches)[:samples]


def _representative_dataset(samples, batch_size, limit, progress=True):
    samples = samples[: limit * batch_size]
    usable = len(samples) - len(samples) % batch_size
    if usable == 0:
        raise ExportError(f"representative_data has {len(samples)} images, fewer than one batch of {batch_size}")
    import keras

    console = sys.stdout  # the converter runs this generator while its own prints are redirected

    def batches():
        bar = None
        if progress:
            with contextlib.redirect_stdout(console):
                print(f"calibrating int8 ranges on {usable} images")
                # a live bar on a terminal, one line at the end in logs
                bar = keras.utils.Progbar(usable // batch_size, unit_name="batch",
                                          verbose=1 if console.isatty() else 2)
        for step, start in enumerate(range(0, usable, batch_size)):
            yield [samples[start : start + batch_size]]
            if bar is not None:
                with contextlib.redirect_stdout(console):
                    bar.update(step + 1)

    return batches


def _normalization_note(model):
    """The metadata's input normalization is the model's contract, (x - 127.5) / 127.5; a checkpoint trained on
    another one carries an InputNormalization step inside the graph, whose numbers the description states."""
    steps = [layer for layer in getattr(model, "layers", []) if type(layer).__name__ == "InputNormalization"]
    return "".join(f"; inside the graph, {layer.name!r} maps those inputs onto the checkpoint's normalization "
                   f"(pixels / 255 - mean) / std with mean {layer.mean}, std {layer.std}" for layer in steps)


def outputs_probabilities(model):
    """Whether the model ends in a softmax (class probabilities) rather than logits."""
    return output_activation(model) == "softmax"


def _logit_range(logits):
    """A FixedRangeQuantizer over the calibration `logits` widened by LOGIT_HEADROOM."""
    from keras_mixer.layers.fake_quant import FixedRangeQuantizer

    low, high = float(np.min(logits)), float(np.max(logits))
    margin = LOGIT_HEADROOM * (high - low)
    return FixedRangeQuantizer(low - margin, high + margin, name="logit_range")


def _with_logit_range(model, calibration):
    """`model` followed by the `_logit_range` of its logits on the calibration images."""
    import keras

    # eager calls: predict() would trace a new function for every exported model (TensorFlow's retracing warning)
    logits = np.concatenate([keras.ops.convert_to_numpy(model(calibration[start : start + 64], training=False))
                             for start in range(0, len(calibration), 64)])
    images = keras.Input(model.input_shape[1:], batch_size=model.input_shape[0], name="images")
    return keras.Model(images, _logit_range(logits)(model(images)), name=model.name)


def _check_integer_only(flatbuffer, name, float_io):
    """ExportError naming the ops of an `integer_only` conversion that kept float32 tensors (the converter leaves
    ops it cannot quantize float, silently): NNAPI, DSPs and the Edge TPU would not run such a file."""
    boundary = ("QUANTIZE", "DEQUANTIZE") if float_io else ()  # float_io: float input and output by request
    floats = sorted({op.op for op in read_graph(f"{name}.tflite", flatbuffer) if op.op not in boundary
                     for tensor in op.inputs + op.outputs if tensor.dtype == "FLOAT32" and tensor.constant is None})
    if floats:
        raise ExportError(
            f"integer_only export of {name!r} would keep float32 tensors in {', '.join(floats)}: the converter cannot "
            "quantize them (a mixture of experts' top-k routing has no integer form). Export without integer_only, "
            "or for the Edge TPU use edgetpu_model(model, experts_on_cpu=True)")


@contextlib.contextmanager
def _converter_quiet():
    """The converter prints its SavedModel signature to stdout and warns about the integer input's range (which it
    sets from the calibration data); neither is actionable for the user."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), native_stderr_quiet():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        yield


def _calibrated_conversion(graphs, plan, scratch, equalization, kept):
    """The calibrated int8 conversion of each (converter, float nodes, calibration inputs, equalization report) of
    `graphs`: calibrate, narrow the ranges (the plan's method), measure each quantized op's error if the plan
    reports them, then quantize, keeping float the nodes `kept(rows, equalization)` names. Returns the int8
    flatbuffers and the equalization report (the pieces' reports joined). By blocks, each calibrated graph waits on
    disk under `scratch` while the others calibrate."""
    batch_size, float_ops = plan.batch_size, plan.float_ops
    stages, rows, narrowed, equalizations = [], [], 0, []
    for index, (converter, float_nodes, images, piece_equalization) in enumerate(graphs):
        with _converter_quiet():
            calibrated = calibrate_only(converter)
        settings = quantize_settings(converter)
        del converter
        images = images[: plan.calibration_steps * batch_size]
        calibrated, changed = narrow_ranges(calibrated, images, batch_size, plan.calibration_method,
                                            image_input=index == 0)
        narrowed += len(changed)
        if plan.report_rows:
            if index == 0:
                count = min(len(images), quantization_report.DEBUG_IMAGES) // batch_size * batch_size
                print(f"measuring each quantized op's error on {count} calibration images")
            rows += _layer_rows(calibrated, settings, images, batch_size, float_ops, float_nodes)
        if piece_equalization is not None:
            equalizations.append(piece_equalization)
        if plan.route == "blocks":
            path = os.path.join(scratch, f"calibrated_{index}.tflite")
            with open(path, "wb") as f:
                f.write(calibrated)
            calibrated = path
        stages.append((settings, calibrated, float_nodes))
    if equalizations:
        equalization = {"strength": equalizations[0]["strength"],
                        "equalized": [row for e in equalizations for row in e["equalized"]],
                        "not_equalized": [row for e in equalizations for row in e["not_equalized"]],
                        "max_output_difference": max(e.get("max_output_difference", 0.0) for e in equalizations)}
        _print_equalization(equalization)
    if narrowed:
        print(f"{plan.calibration_method} calibration narrowed {narrowed} activation ranges")
    kept_nodes = kept(sorted(rows, key=lambda row: row["sqnr_db"]), equalization) if plan.report_rows else []
    flatbuffers = []
    for settings, calibrated, float_nodes in stages:
        if isinstance(calibrated, str):
            with open(calibrated, "rb") as f:
                calibrated = f.read()
        with _converter_quiet():
            flatbuffers.append(mlir_quantize(calibrated, settings, float_ops, list(float_nodes) + kept_nodes))
    return flatbuffers, equalization


def _equalized(model, calibration):
    """`equalize_channels` of `model`, or of the model an `edgetpu_model` graph was built from (then rebuilt)."""
    from keras_mixer.export.equalize import equalize_channels
    from keras_mixer.quantization import is_quantized, strip_quantization

    form = edgetpu_form(model)
    if form is None:
        equalized, equalization = equalize_channels(model, calibration)
    else:  # the Edge TPU form reads float weights only, so a QAT source is equalized as its float model
        source = form.source_model
        equalized, equalization = equalize_channels(strip_quantization(source) if is_quantized(source) else source,
                                                    calibration)
        equalized = form.rebuild(equalized)
    return equalized, equalization


def _print_equalization(equalization):
    moved = equalization["equalized"]
    if moved:
        print(f"equalized {len(moved)} normalization -> linear pairs: largest channel range "
              f"{max(e['range_before'] for e in moved):.3g} -> {max(e['range_after'] for e in moved):.3g}, "
              f"largest spread (max / median channel) {max(e['spread_before'] for e in moved):.1f} -> "
              f"{max(e['spread_after'] for e in moved):.1f}")


def _layer_rows(calibrated, settings, images, batch_size, float_ops, float_nodes):
    """Every quantized op's error on the calibrated graph (`quantization_report.layer_errors`), worst first."""
    count = min(len(images), quantization_report.DEBUG_IMAGES) // batch_size * batch_size
    with _converter_quiet():
        debug_model = mlir_quantize(calibrated, settings, float_ops, float_nodes, numeric_verify=True)
    return quantization_report.layer_errors(
        debug_model, lambda: ([images[start : start + batch_size]] for start in range(0, count, batch_size)))


def _float_layers_kept(rows, float_layers, name, quantization, equalization, calibration_method, report):
    """The tensor names `float_layers` keeps float among the report's `rows`; writes the `report` JSON if asked."""
    import json

    kept = []
    if is_whole_number(float_layers):
        kept = [row["tensor"] for row in rows[:float_layers]]
    elif float_layers:
        for pattern in float_layers:
            matched = quantization_report.matching_nodes(rows, [pattern])
            if not matched:
                raise ExportError(f"float_layers: {pattern!r} matches no quantized op of {name!r} (see the "
                                  "report's tensor names)")
            kept += matched
    for line in quantization_report.format_rows(rows, limit=5):
        print(line)
    if report is not None:
        write_text(report, json.dumps({"model": name, "quantization": quantization,
                                       "calibration": calibration_method, "equalization": equalization,
                                       "float_layers": kept, "layers": rows}, indent=1))
        print(f"wrote {os.fspath(report)} ({len(rows)} quantized ops, worst first)")
    return kept


def _pieces(pieces, input_shape, calibration, name, plan, converter_for):
    """(converter, float nodes, calibration inputs, equalization report) of each piece of a blockwise conversion in
    turn: each piece calibrated on the float activations the pieces before it compute from the calibration images,
    equalized on them if the plan equalizes, and the last one ending in the `_logit_range` of its logits if the
    plan gives them one."""
    from keras_mixer.export.equalize import equalize_channels

    inputs, shape = calibration, input_shape
    for index, layers in enumerate(pieces):
        print(f"piece {index + 1}/{len(pieces)}: {layers[0].name}" + (f" .. {layers[-1].name}" if len(layers) > 1
                                                                       else ""))
        last = index == len(pieces) - 1
        outputs = None if inputs is None else blockwise.run(layers, inputs)
        if last and plan.logit_range:
            layers = layers + [_logit_range(outputs)]
        graph = blockwise.piece_model(layers, shape, name)
        equalization = None
        if plan.equalize:
            graph, equalization = equalize_channels(graph, inputs)
        converter, float_nodes = converter_for(graph, inputs, first=index == 0, last=last)
        yield converter, float_nodes, inputs, equalization
        inputs, shape = outputs, graph.output_shape
        del converter, graph
        gc.collect()  # the piece's traced graph and equalized copy, before the next one is made


def require_tensorflow_backend():
    """ExportError unless Keras runs on TensorFlow: the converter traces the model as a TensorFlow graph."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExportError("TFLite export runs on the TensorFlow backend and this process runs "
                          f"{keras.backend.backend()}: run it with KERAS_BACKEND=tensorflow (a .keras file trained on "
                          "any backend loads there)")


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
    calibration_samples=256,
    equalize=True,
    report=None,
    float_layers=None,
    calibration_method="percentile",
    route="auto",
    piece_bytes=None,
):
    """Converts a Keras model to a `.tflite` file, written atomically; returns the path.

    Args:
        model: a Keras model with a static input shape (a fake-quant QAT model from
            `keras_mixer.quantization.quantize_model` carries its own ranges).
        path: output file.
        quantization: "float32"; "float16" (fp16 weights); "dynamic" (int8 weights, float activations);
            "int8" / "uint8": int8 weights and activations with integer input and output; see `integer_only`.
        representative_data: images for calibrating activation ranges: preprocessed [N, H, W, C] floats at the
            model's input size; a tf.data.Dataset, an iterator or a function returning one (TFLiteConverter's
            `representative_dataset`) of them, of single images or of (images, labels); or a dataset name
            ("digits", an image folder, a tfds name) whose training images are preprocessed as for evaluation. Required for "int8"/"uint8" unless the
            model was trained with fake-quant (QAT), which then exports all-integer from its own ranges.
        batch_size: the static batch of the exported graph (1 for phones and the Edge TPU).
        float_io: with "int8"/"uint8", keep float32 input/output (quantize/dequantize inside the model).
        calibration_steps: at most this many batches of `representative_data` are used.
        calibration_samples: how many images a dataset or a dataset name gives.
        labels: class names, a list of one-line strings (one per output; `read_labels` reads a label file),
            embedded as labels.txt in the TFLite metadata (read by Android tooling).
        description: model description for the metadata.
        metadata: embed TFLite metadata (input normalization (x - 127.5) / 127.5 as `preprocess_input`, RGB,
            labels; the description names a checkpoint's own normalization inside the graph); the graph is
            unchanged.
        integer_only: with "int8"/"uint8", quantize every op, as the Edge TPU, NNAPI and DSPs need. If False,
            the elementwise ops, LayerNorm's statistics and GELU (`XNNPACK_FLOAT_OPS`) stay float32 between the
            int8 matmuls and convolutions, which is what LiteRT's CPU delegate (XNNPACK) runs fastest.
            Default: True for "uint8" (a legacy-accelerator format) and for `edgetpu_model` graphs, False
            otherwise. A QAT model's default int8 export is its fine-tuned float graph calibrated like a
            post-training export (`strip_quantization`): the converter would otherwise pin int8 every op between
            fake-quant ops (GELU, residual ADDs, LayerNorm means), splitting XNNPACK's graph (9 partitions on the
            digits Mixer). With integer_only, or without `representative_data`, a QAT model converts from its own
            fake-quant ranges. Logits get an int8 range with `LOGIT_HEADROOM` over the calibration logits.
        equalize: with "int8"/"uint8" calibrated on `representative_data`, first move outlier channels of the
            normalized activations into the next layer's weights (`keras_mixer.export.equalize_channels`: the same
            float function, checked; for an `edgetpu_model` graph, applied to the model it was built from). QAT
            models are exported as trained (`keras-mixer qat` equalizes the float model before fine-tuning).
        report: a path for a JSON report of a calibrated int8 export: what equalization did, and for every
            quantized op the error its quantization adds against the float op on calibration images (SQNR), its
            float range and outlier ratio, worst first (`keras_mixer.export.quantization_report`).
        calibration_method: how calibrated activation ranges are set: "percentile" (each tensor's range narrowed
            to `calibration.PERCENTILE` of its values), "mse" (to the range of least int8 error) or "minmax" (the
            converter's: its extremes over the calibration images); see `keras_mixer.export.calibration`. A QAT
            model's all-integer export keeps its fake-quant ranges and takes "minmax" for the rest.
        float_layers: keep these ops float32 in a calibrated default int8 export: regular expressions searched in
            the report's tensor names (e.g. "MixerBlock_7/channel_mixing"), or a number N for the N ops of worst
            SQNR in the report.

        route: how the graph converts (`keras_mixer.export.plan`): "whole" (its traced function in memory),
            "saved_model" (whole, from a SavedModel on disk: one copy of the weights fewer in memory) or "blocks"
            (a chain of blocks a piece at a time, joined: memory bounded by a piece; the ops of a whole-graph
            conversion, int8 outputs within one int8 step of it, each block equalized and calibrated on the
            activations of the blocks before it; not for integer-only exports, whose pieces would meet on int8
            tensors). "auto": "whole" up to `plan.LARGE_MODEL_BYTES` of float32 weights, above it "blocks" where
            it applies, else "saved_model". `export_plan(model, ...)` shows the decision without converting.
        piece_bytes: with route="blocks", the float32 weight bytes of one piece (default `plan.PIECE_BYTES`,
            one Mixer-L/16 block); a single block above it is a piece of its own.
    """
    require_tensorflow_backend()
    check_output_paths(path, report)
    plan = plan_export(ModelFacts.of(model, route), ExportOptions(
        quantization=quantization, calibrated=representative_data is not None, batch_size=batch_size,
        float_io=float_io, integer_only=integer_only, equalize=equalize, report=report is not None,
        float_layers=float_layers, calibration_method=calibration_method, calibration_steps=calibration_steps,
        calibration_samples=calibration_samples, route=route, piece_bytes=piece_bytes))
    check_labels(labels, model.output_shape[-1])  # before the conversion, not after it
    calibration = None
    if plan.calibrated:
        calibration = calibration_array(representative_data, static_image_shape(model), calibration_samples)
    name, probabilities, note = model.name, outputs_probabilities(model), _normalization_note(model)
    static_model, equalization = _export_form(model, plan, calibration)
    del model
    print(f"converting {name!r} to TFLite ({plan.quantization}{', integer only' if plan.integer_only and plan.integer else ''})"
          + (" block by block" if plan.route == "blocks" else ""))
    # the saved_model and blocks routes' SavedModel or calibrated pieces, removed after
    scratch = (tempfile.TemporaryDirectory(prefix="keras_mixer_export_") if plan.route != "whole" else None)
    try:
        flatbuffer = _convert(plan, static_model, calibration, equalization, scratch and scratch.name,
                              float_layers, report)
    except KerasMixerError:
        raise
    except Exception as error:  # the converter raises ConverterError / RuntimeError with the MLIR diagnostics
        raise ExportError(f"TFLite conversion of {name!r} ({quantization}) failed: {error}") from error
    finally:
        if scratch is not None:
            scratch.cleanup()
    if plan.check_integer_only:
        _check_integer_only(flatbuffer, name, float_io)
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
        del flatbuffer  # add_metadata reads the file back and packs it again: one copy of it in memory at a time
        if metadata:
            add_metadata(tmp, name, (description or f"{name}, {quantization} TFLite export by keras_mixer") + note,
                         labels=labels, probabilities=probabilities)
    return path


def _export_form(model, plan, calibration):
    """The graph the plan converts, at its static batch, and the equalization report: equalized (on the whole model;
    by blocks each piece is equalized on its own inputs), experts in their static-shape form, a QAT model stripped
    of its fake-quant layers where the plan says so, and the logit range appended (by blocks, to the last piece)."""
    from keras_mixer.models.sparse_mlp import with_dispatch
    from keras_mixer.quantization import strip_quantization

    equalization = None
    if plan.equalize and plan.route != "blocks":
        model, equalization = _equalized(model, calibration)
        _print_equalization(equalization)
    model = with_dispatch(model, "dense")  # mixtures of experts export in their static-shape form
    if plan.strip_fake_quant:
        model = strip_quantization(model)
    static_model = _static_batch_model(model, plan.batch_size)
    if plan.logit_range and plan.route != "blocks":
        static_model = _with_logit_range(static_model, calibration)
    return static_model, equalization


def _convert(plan, static_model, calibration, equalization, scratch, float_layers, report):
    """The plan's route carried out: one graph (from the Keras model or a SavedModel) or a chain of pieces, each
    converted (and calibrated, when the plan is) with the plan's settings; returns the flatbuffer."""
    name = static_model.name
    converter_for = functools.partial(_converter_for, plan, scratch)
    if plan.route == "blocks":
        chain = blockwise.layer_chain(static_model)
        if chain is None:  # the model was a chain before its export form was made (strip_quantization, dispatch)
            raise ExportError(f"{name!r}: its export form is not a chain of layers; it cannot convert block by block")
        pieces = blockwise.split(chain, plan.piece_bytes)
        print(f"{len(pieces)} pieces")
        graphs = _pieces(pieces, static_model.input_shape, calibration, name, plan, converter_for)
        cut_names = [f"{name}/{layers[-1].name}" for layers in pieces[:-1]]
    else:
        graphs = iter([converter_for(static_model, calibration) + (calibration, None)])
    # a saved_model route's converter reads the SavedModel: the equalized copy this export made can go before it
    # converts
    del static_model
    gc.collect()
    if plan.calibrated:
        flatbuffers, equalization = _calibrated_conversion(
            graphs, plan, scratch, equalization=equalization,
            kept=lambda rows, equalization: _float_layers_kept(rows, float_layers, name, plan.quantization,
                                                               equalization, plan.calibration_method, report))
    else:
        flatbuffers = []
        for converter, _, _, _ in graphs:
            with _converter_quiet():
                flatbuffers.append(converter.convert())
            del converter
    return join(flatbuffers, cut_names) if plan.route == "blocks" else flatbuffers[0]


def _converter_for(plan, scratch, graph, images, first=True, last=True):
    """A converter of `graph` with the plan's settings, and the graph nodes it keeps float."""
    import tensorflow as tf

    converter = _converter(graph, scratch if plan.from_saved_model else None)
    if plan.quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if plan.strip_fake_quant:  # quantize the kernels per tensor, as QAT trained them (per channel lost 1 % top-1
        # on digits)
        per_tensor_kernels(converter)
    if plan.quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    float_nodes = _mixture_of_experts_nodes(graph) if plan.experts_float else []
    if plan.integer:
        if images is not None:
            converter.representative_dataset = _representative_dataset(
                images, plan.batch_size, plan.calibration_steps, progress=plan.route != "blocks")
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_nodes or plan.float_ops:
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        if plan.io_type != "float32":  # by blocks, the pieces meet on float32 tensors
            io_type = getattr(tf, plan.io_type)
            converter.inference_input_type = io_type if first else tf.float32
            converter.inference_output_type = io_type if last else tf.float32
    return converter, float_nodes
