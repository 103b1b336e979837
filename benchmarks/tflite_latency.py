"""float32 vs int8 TFLite latency of registered models, measured side by side in one run: the default int8 export
(elementwise ops float, for XNNPACK), the all-integer one (`integer_only=True`, what NNAPI and DSPs need) and the
Edge-TPU form (`edgetpu_model`, all-integer), with the form's Edge TPU compatibility summary and size against the
Edge TPU's ~8 MiB parameter cache. Random weights, random calibration: speed and graph structure, not accuracy.

    python benchmarks/tflite_latency.py mixer_s32 as_mlp_tiny hire_mlp_tiny vip_small14 raft_mlp_small --threads 1 2 \
        --output docs/results/tflite_latency.json

`--output` writes the rows with the machine and the command: the pages' tables are rendered from that file
(benchmarks/figures.py).
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import keras_mixer
from keras_mixer.machine import machine
from keras_mixer.errors import ExportError
from keras_mixer.export import load_interpreter, to_tflite
from keras_mixer.export.evaluate import latency_ms
from keras_mixer.export.edgetpu import check_edgetpu
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.io_utils import write_text


def gflops(model):
    """Multiply-accumulates of one 224x224 image, in G (TensorFlow's profiler counts a MAC as 2 FLOPs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    graph = convert_variables_to_constants_v2(tf.function(lambda x: model(x)).get_concrete_function(spec)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return tf.compat.v1.profiler.profile(graph, options=options).total_float_ops / 2e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="registered names, e.g. as_mlp_tiny")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--output", help="a JSON file for the rows, the machine and the command")
    args = parser.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
    print(f"{'model':<18}{'GMACs':>7}{'threads':>8}{'fp32 ms':>9}{'int8 ms':>9}{'all-int8':>9}{'edgetpu':>9}"
          f"{'form/int8':>10}{'form MiB':>9}  Edge TPU (the form)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = keras_mixer.create_model(name, classifier_activation=None)
            macs = gflops(model)
            exports = {"float32": (model, "float32", False), "int8": (model, "int8", False),
                       "integer": (model, "int8", True), "edgetpu": (edgetpu_model(model, experts_on_cpu=True), "int8", True)}
            paths = {}
            for key, (source, mode, integer_only) in exports.items():
                try:
                    paths[key] = to_tflite(source, Path(tmp) / f"{name}_{key}.tflite", mode,
                                           representative_data=calibration, integer_only=integer_only)
                except ExportError as error:  # Sparse-MLP has no integer-only form: its routing stays float
                    print(f"{name}: {key} export refused: {error}")
            _, edgetpu = check_edgetpu(paths["edgetpu"])
            verdict = ("rejected (" + ", ".join(edgetpu["rejected_by"]) + ")" if edgetpu["rejected_by"]
                       else f"{edgetpu['edgetpu_ops']}/{edgetpu['ops']} mapped"
                       + (f"; first CPU op {edgetpu['first_cpu_op']} in {edgetpu['first_cpu_tensor']}"
                          if edgetpu["first_cpu_op"] else ""))
            mib = os.path.getsize(paths["edgetpu"]) / 2**20
            for threads in args.threads:
                ms = {mode: latency_ms(load_interpreter(p, num_threads=threads), calibration[0], runs=args.runs)[0]
                      for mode, p in paths.items()}
                ms.setdefault("integer", float("nan"))
                print(f"{name:<18}{macs:>7.2f}{threads:>8}{ms['float32']:>9.1f}{ms['int8']:>9.1f}{ms['integer']:>9.1f}"
                      f"{ms['edgetpu']:>9.1f}{ms['edgetpu'] / ms['int8']:>10.2f}{mib:>8.1f}{'' if mib < 8 else '!'}"
                      f"  {verdict}", flush=True)
                rows.append({"model": name, "gmacs": macs, "threads": threads, "params": model.count_params(),
                             "median_ms": {mode: (None if np.isnan(value) else value) for mode, value in ms.items()},
                             "edgetpu_form_mib": mib, "edgetpu_ops": edgetpu["edgetpu_ops"], "ops": edgetpu["ops"],
                             "rejected_by": edgetpu["rejected_by"]})
    if args.output:
        command = "python benchmarks/tflite_latency.py " + " ".join(sys.argv[1:])
        write_text(args.output, json.dumps({"machine": machine(), "command": command, "runs": args.runs,
                                            "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
