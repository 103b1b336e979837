"""float32 vs int8 TFLite latency of registered models, measured side by side in one run: the default int8 export
(elementwise ops float, for XNNPACK) and the all-integer one (`integer_only=True`) with its Edge TPU compatibility
summary. Random weights, random calibration: speed and graph structure only, not accuracy.

    python benchmarks/tflite_latency.py as_mlp_t hire_mlp_tiny mixer_s32 --threads 1 2
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

import keras_mixer
from keras_mixer.export import load_interpreter, to_tflite
from keras_mixer.export.evaluate import latency_ms
from keras_mixer.export.edgetpu import check_edgetpu


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
    parser.add_argument("models", nargs="+", help="registered names, e.g. as_mlp_t")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, 224, 224, 3)).astype("float32")
    print(f"{'model':<16}{'GMACs':>7}{'threads':>8}{'fp32 ms':>10}{'int8 ms':>10}{'int8/fp32':>10}"
          f"{'all-int8 ms':>12}  Edge TPU (all-int8)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = keras_mixer.create_model(name, classifier_activation=None)
            macs = gflops(model)
            exports = {"float32": ("float32", False), "int8": ("int8", False), "integer": ("int8", True)}
            paths = {key: to_tflite(model, Path(tmp) / f"{name}_{key}.tflite", mode, representative_data=calibration,
                                    integer_only=integer_only) for key, (mode, integer_only) in exports.items()}
            _, edgetpu = check_edgetpu(paths["integer"])
            verdict = ("rejected (" + ", ".join(edgetpu["rejected_by"]) + ")" if edgetpu["rejected_by"]
                       else f"{edgetpu['edgetpu_ops']}/{edgetpu['ops']} mapped; first CPU op {edgetpu['first_cpu_op']}")
            for threads in args.threads:
                ms = {mode: latency_ms(load_interpreter(p, num_threads=threads), calibration[0], runs=args.runs)[0]
                      for mode, p in paths.items()}
                print(f"{name:<16}{macs:>7.2f}{threads:>8}{ms['float32']:>10.1f}{ms['int8']:>10.1f}"
                      f"{ms['int8'] / ms['float32']:>10.2f}{ms['integer']:>12.1f}  {verdict}")


if __name__ == "__main__":
    main()
