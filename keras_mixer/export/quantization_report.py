"""Per-layer error of an int8 conversion against the float model, measured by TensorFlow's QuantizationDebugger.

The debugger converts the same calibrated graph with a float copy of every quantized op beside it, fed the same
dequantized inputs, so each row is the error that op's own quantization adds (not the error accumulated from the
ops before it): the rows that stand out are the ones to keep in float (`to_tflite(float_layers=...)`).
"""

import io
import re
import warnings

import numpy as np

from keras_mixer.io_utils import native_stderr_quiet

# images of the calibration set the debugger runs (each one through the float and the quantized op of every layer)
DEBUG_IMAGES = 32
# the outlier ratio compares a tensor's largest magnitude with this percentile of its magnitudes
OUTLIER_PERCENTILE = 99.0


def _sqnr_db(reference, values):
    noise = float(np.sum((reference - values) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(max(float(np.sum(reference ** 2)), 1e-30) / noise))


def _metrics():
    """The debugger's per-layer metrics on (float outputs, quantized outputs, scale, zero point) of each image."""

    def dequantized(quantized, scale, zero_point):
        return (np.asarray(quantized, np.float64) - zero_point) * scale

    def floats(float_tensors):
        return np.concatenate([np.ravel(t) for t in float_tensors]).astype(np.float64)

    def sqnr(float_tensors, quant_tensors, scale, zero_point):
        reference = floats(float_tensors)
        values = np.concatenate([np.ravel(dequantized(q, scale, zero_point)) for q in quant_tensors])
        return _sqnr_db(reference, values)

    def range_min(float_tensors, quant_tensors, scale, zero_point):
        return float(floats(float_tensors).min())

    def range_max(float_tensors, quant_tensors, scale, zero_point):
        return float(floats(float_tensors).max())

    def outlier_ratio(float_tensors, quant_tensors, scale, zero_point):
        magnitudes = np.abs(floats(float_tensors))
        return float(magnitudes.max() / max(np.percentile(magnitudes, OUTLIER_PERCENTILE), 1e-12))

    return {"sqnr_db": sqnr, "min": range_min, "max": range_max, "outlier_ratio": outlier_ratio}


def readable_name(tensor_name):
    """The first of a fused op's names as layer paths: without the repeated model scopes the converter prefixes,
    and without the "_1" Keras appends to every scope of a model called inside another (the export's static-batch
    wrapper), e.g. "MixerBlock_3/channel_mixing/Dense_0/Tensordot"."""
    parts = tensor_name.split(";")[0].split("/")
    while len(parts) > 1 and parts[0] == parts[1]:
        parts = parts[1:]
    if len(parts) > 2:
        parts = parts[1:]
    return "/".join([re.sub(r"_\d+$", "", part) for part in parts[:-1]] + parts[-1:])


def layer_errors(debug_model, dataset):
    """Rows (op, tensor, readable name, SQNR dB, float range, outlier ratio, int8 scale), worst SQNR first, for
    every quantized op of `debug_model` (the MLIR quantizer's numeric-verify model of the export), run on the
    batches `dataset()` yields."""
    import tensorflow as tf

    options = tf.lite.experimental.QuantizationDebugOptions(layer_direct_compare_metrics=_metrics())
    # the debugger warns about its own deprecated interpreter
    with warnings.catch_warnings(), native_stderr_quiet():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model, debug_dataset=dataset, debug_options=options)
        debugger.run()
        dump = io.StringIO()
        debugger.layer_statistics_dump(dump)
    import csv

    rows = []
    for entry in csv.DictReader(io.StringIO(dump.getvalue())):
        rows.append({
            "op": entry["op_name"], "tensor": entry["tensor_name"], "name": readable_name(entry["tensor_name"]),
            "sqnr_db": float(entry["sqnr_db"]), "min": float(entry["min"]), "max": float(entry["max"]),
            "outlier_ratio": float(entry["outlier_ratio"]), "scale": float(entry["scale"]),
        })
    return sorted(rows, key=lambda row: row["sqnr_db"])


def matching_nodes(rows, patterns):
    """Tensor names of the rows whose name matches any of `patterns` (regular expressions, searched)."""
    compiled = [re.compile(pattern) for pattern in patterns]
    return [row["tensor"] for row in rows if any(p.search(row["tensor"]) or p.search(row["name"]) for p in compiled)]


def format_rows(rows, limit=10):
    """The worst `limit` rows as aligned text lines."""
    lines = [f"{'SQNR dB':>8}  {'range':>19}  {'outliers':>8}  op / tensor"]
    for row in rows[:limit]:
        lines.append(f"{row['sqnr_db']:8.1f}  [{row['min']:8.3g}, {row['max']:8.3g}]  {row['outlier_ratio']:8.1f}  "
                     f"{row['op']} {row['name']}")
    return lines
