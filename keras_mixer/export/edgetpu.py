"""Edge TPU compatibility report for a `.tflite` file, from the Coral compiler's documented rules (compiler 16.0,
the last release): which ops it maps, and where the graph would fall back to the CPU.

The compiler maps ops in graph order up to the first one it cannot map; everything after runs on the CPU. A model
containing the GELU builtin (op code 150, newer than its schema) is rejected whole. Rules marked [U] in our notes
(exact op-version limits) are reported as warnings of risk, not certainties: run the real compiler to confirm.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

from keras_mixer.errors import ExportError
from keras_mixer.export.flatbuffer import read_graph

# op -> limitation checked below (None: supported as is). From the Edge TPU supported-ops table.
SUPPORTED_OPS = {
    "ADD": None, "SUB": None, "MUL": None, "MAXIMUM": None, "MINIMUM": None,
    "LOGISTIC": None, "RELU": None, "RELU6": None, "RELU_N1_TO_1": None, "TANH": None, "HARD_SWISH": None,
    "PRELU": None, "AVERAGE_POOL_2D": None, "MAX_POOL_2D": None, "CONCATENATION": None, "CONV_2D": None,
    "DEPTHWISE_CONV_2D": None, "TRANSPOSE_CONV": None, "L2_NORMALIZATION": None, "PAD": None, "RESHAPE": None,
    "RESIZE_BILINEAR": None, "RESIZE_NEAREST_NEIGHBOR": None, "SOFTMAX": None, "SPACE_TO_DEPTH": None,
    "SPLIT": None, "SQUEEZE": None, "STRIDED_SLICE": None, "SLICE": None, "EXPAND_DIMS": None, "PACK": None,
    "REDUCE_MAX": None, "REDUCE_MIN": None, "SUM": None, "RSQRT": None, "SQUARED_DIFFERENCE": None,
    "QUANTIZE": None,
    "FULLY_CONNECTED": "output must be one-dimensional",
    "MEAN": "reduction over the spatial (H/W) axes of a 4-D tensor only",
    "TRANSPOSE": "at most 4-D",
}
REJECTED_OPS = {"GELU": "compiler 16 cannot parse the GELU builtin (op code 150): the whole model is rejected"}
# op versions newer than compiler 16's schema knows (seen rejected: TRANSPOSE v6, CONV_2D v6) [U on exact bounds]
MAX_KNOWN_VERSION = {"TRANSPOSE": 5, "CONV_2D": 5}
INTEGER_TYPES = {"INT8", "UINT8"}
# elementwise ops whose two activation inputs must have one shape (a constant operand may broadcast)
ELEMENTWISE_OPS = {"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE"}


@dataclasses.dataclass
class OpReport:
    index: int
    op: str
    version: int
    dtypes: str
    on_edgetpu: bool
    reason: str = ""
    output: str = ""  # the op's first output tensor: its name carries the Keras layer that made it


def _why_not_mapped(op, version, inputs, outputs):
    if op in REJECTED_OPS:
        return REJECTED_OPS[op]
    if op not in SUPPORTED_OPS:
        return f"{op} is not supported by the Edge TPU"
    variables = [t for t in inputs if t.constant is None]  # the activation inputs (constants have data)
    for tensor in variables + outputs:
        if tensor.dtype not in INTEGER_TYPES:
            return f"{tensor.dtype.lower()} activation (the Edge TPU runs 8-bit integer tensors only)"
        if any(d > 1 for d in tensor.shape[:-3]):
            return f"tensor shape {list(tensor.shape)}: only the 3 innermost dimensions may exceed 1"
    out_shape = outputs[0].shape if outputs else ()
    if op == "FULLY_CONNECTED" and any(d > 1 for d in out_shape[:-1]):
        return f"FULLY_CONNECTED output {list(out_shape)} is not one-dimensional"
    if op == "MEAN":
        axes = inputs[1].constant.view(np.int32) if len(inputs) > 1 and inputs[1].constant is not None else None
        rank = len(inputs[0].shape)
        if axes is None or rank != 4 or not set((axes % rank).tolist()) <= {1, 2}:
            return f"MEAN over axes {None if axes is None else axes.tolist()} of a {rank}-D tensor (only H/W of 4-D)"
    if op in ELEMENTWISE_OPS and len(variables) > 1 and len({int(np.prod(t.shape)) for t in variables}) > 1:
        shapes = " and ".join(str(list(t.shape)) for t in variables)
        return (f"{op} broadcasts one activation against another ({shapes}): compilers have left such ops on the "
                "CPU (google-coral/edgetpu#35) [risk]")
    if op == "TRANSPOSE" and len(inputs[0].shape) > 4:
        return f"{len(inputs[0].shape)}-D TRANSPOSE (at most 4-D)"
    if version > MAX_KNOWN_VERSION.get(op, version):
        return f"{op} version {version} is newer than compiler 16 knows (it rejected v6)"
    return ""


def check_edgetpu(path):
    """Per-op report: would the Edge TPU compiler map it? Returns (list of OpReport, summary dict)."""
    rows, fallback = [], None
    ops = read_graph(path)
    for index, (op, version, inputs, outputs) in enumerate(ops):
        try:
            reason = _why_not_mapped(op, version, inputs, outputs)
        except (IndexError, ValueError, TypeError) as error:  # e.g. a damaged op without its inputs
            raise ExportError(f"{path}: op #{index} {op} is malformed ({type(error).__name__}: {error})") from error
        if reason and fallback is None:
            fallback = index
        dtypes = ",".join(sorted({t.dtype.lower() for t in inputs + outputs if t.constant is None}))
        rows.append(OpReport(index, op, version, dtypes, fallback is None, reason, outputs[0].name if outputs else ""))
    rejected = sorted({r.op for r in rows if r.op in REJECTED_OPS})
    summary = {
        "ops": len(rows),
        "edgetpu_ops": 0 if rejected else sum(r.on_edgetpu for r in rows),
        "cpu_ops": len(rows) if rejected else sum(not r.on_edgetpu for r in rows),
        "rejected_by": rejected,
        "first_cpu_op": None if fallback is None else f"#{fallback} {rows[fallback].op}: {rows[fallback].reason}",
        "first_cpu_tensor": None if fallback is None else rows[fallback].output,
    }
    return rows, summary


def run_compiler(path, compiler="edgetpu_compiler"):
    """Runs the real Edge TPU compiler when it is installed; returns its log and the parsed op counts, or None."""
    executable = shutil.which(compiler)
    if executable is None:
        return None
    with tempfile.TemporaryDirectory() as out:
        result = subprocess.run([executable, "-s", "-o", out, os.fspath(path)], capture_output=True, text=True,
                                timeout=600)
    log = result.stdout + result.stderr
    counts = {key: int(value) for key, value in re.findall(
        r"Number of operations that will run on (Edge TPU|CPU): (\d+)", log)}
    return {"returncode": result.returncode, "log": log, "counts": counts}


def format_report(rows, summary):
    lines = [f"{'#':>4}  {'op':<22}{'v':>3}  {'tensors':<12}{'where':<9}reason"]
    for r in rows:
        lines.append(f"{r.index:>4}  {r.op:<22}{r.version:>3}  {r.dtypes:<12}{'EdgeTPU' if r.on_edgetpu else 'CPU':<9}{r.reason}")
    if summary["rejected_by"]:
        lines.append(f"REJECTED: the compiler cannot parse this model ({', '.join(summary['rejected_by'])}); 0 ops would run on the Edge TPU")
    else:
        lines.append(f"{summary['edgetpu_ops']} of {summary['ops']} ops would run on the Edge TPU, {summary['cpu_ops']} on the CPU")
    if summary["first_cpu_op"]:
        lines.append(f"first op on the CPU: {summary['first_cpu_op']}")
        lines.append(f"  it computes {summary['first_cpu_tensor']}: everything from there runs on the CPU")
    return "\n".join(lines)
