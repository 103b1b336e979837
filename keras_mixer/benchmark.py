"""Side-by-side inference benchmarks: one set of Mixer weights in every runtime a user could pick, measured in
one run on one machine, with ratios to timm eager (the PyTorch reference) taken from that same run.

Each runtime runs in its own subprocess (thread settings that must precede initialization, and a clean peak
RSS per runtime); inside it, every batch size and thread count is timed after warm-up. Results: a JSON with the
machine description, a CSV, and a PNG bar chart.

    keras-mixer benchmark --models mixer_s32 --batch-sizes 1 8 --threads 1 2 --output runs/bench
"""

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from keras_mixer.errors import KerasMixerError
from keras_mixer.io_utils import atomic_path, require_output_folder, write_text
from keras_mixer.machine import machine

# tflite_int8 is `to_tflite(..., "int8")` as phones get it; tflite_int8_integer the all-integer graph
# (integer_only=True, what the Edge TPU and NNAPI need), measured to show what keeping the elementwise ops float buys
# litert_torch_*: Google's own PyTorch -> LiteRT path, the edge peer: timm's model converted by litert-torch, then
# quantized by ai-edge-quantizer with its stock recipes (dynamic_wi8_afp32: int8 weights, float activations;
# static_wi8_ai8: int8 weights and activations)
RUNTIMES = ("tflite_int8", "tflite_int8_integer", "tflite_fp16", "tflite_fp32", "litert_torch_fp32",
            "litert_torch_dynamic_int8", "litert_torch_static_int8", "keras_tf", "keras_jax", "timm_eager",
            "timm_compile", "ort_fp32", "ort_int8", "matmul_peak_int8", "matmul_peak_fp32")
# The ceiling: the model's own matmuls alone, exported like our files (int8 and float32) and timed in the same run.
# A runtime's efficiency is its GMAC/s as a share of the matching peak (int8 runtimes: the int8 peak).
PEAKS = ("matmul_peak_int8", "matmul_peak_fp32")
INT8_RUNTIMES = ("tflite_int8", "tflite_int8_integer", "litert_torch_dynamic_int8", "litert_torch_static_int8",
                 "ort_int8", "matmul_peak_int8")
# the Keras runtimes fix their thread pools when the backend starts: one process per thread count
PROCESS_PER_THREAD_COUNT = ("keras_tf", "keras_jax")
REFERENCE = "timm_eager"


def timings(run, runs, warmup=5):
    """(median, p90) milliseconds of `run()` over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# "mixer_tiny": a 32x32 Mixer for the harness's smoke test (seconds, not minutes)
TINY = {"patch_size": 8, "hidden_dim": 32, "num_blocks": 2, "tokens_mlp_dim": 16, "channels_mlp_dim": 64}
# the same Mixer in timm's MlpMixer arguments (its MLP widths as ratios of the hidden width)
TIMM_TINY = {"patch_size": TINY["patch_size"], "num_blocks": TINY["num_blocks"], "embed_dim": TINY["hidden_dim"],
             "mlp_ratio": (TINY["tokens_mlp_dim"] / TINY["hidden_dim"], TINY["channels_mlp_dim"] / TINY["hidden_dim"])}


def mixer_shape(name):
    """(tokens, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim, patch_size, classes) of `name`."""
    from keras_mixer.models.mlp_mixer import MIXER_VARIANTS

    config = TINY if name == "mixer_tiny" else MIXER_VARIANTS[name]
    patch, hidden, blocks, tokens_mlp, channels_mlp = (config[k] for k in ("patch_size", "hidden_dim", "num_blocks",
                                                                           "tokens_mlp_dim", "channels_mlp_dim"))
    size, classes = (32, 10) if name == "mixer_tiny" else (224, 1000)
    return (size // patch) ** 2, hidden, blocks, tokens_mlp, channels_mlp, patch, classes


def mixer_gmacs(name, mixing_only=False):
    """Multiply-accumulates of one image: the patch stem, the token- and channel-mixing matmuls, the head (with
    `mixing_only`, the mixing matmuls alone: what `matmul_stack` computes)."""
    tokens, hidden, blocks, tokens_mlp, channels_mlp, patch, classes = mixer_shape(name)
    mixing = blocks * 2 * tokens * hidden * (tokens_mlp + channels_mlp)
    return (mixing if mixing_only else tokens * hidden * 3 * patch**2 + mixing + hidden * classes) / 1e9


def matmul_stack(name):
    """The Mixer's mixing matmuls and nothing else: channel mixing on [tokens, hidden], one transpose, token mixing
    on [hidden, tokens] (4-D, [batch, 1, rows, features], as the exporter takes images); ReLU between them (fused
    into the matmul) so that no two consecutive matmuls fold."""
    import keras

    tokens, hidden, blocks, tokens_mlp, channels_mlp, _, _ = mixer_shape(name)
    x = inputs = keras.Input((1, tokens, hidden))
    for _ in range(blocks):
        x = keras.layers.Dense(hidden, "relu")(keras.layers.Dense(channels_mlp, "relu")(x))
    x = keras.layers.Permute((1, 3, 2))(x)
    for _ in range(blocks):
        x = keras.layers.Dense(tokens, "relu")(keras.layers.Dense(tokens_mlp, "relu")(x))
    return keras.Model(inputs, x, name=f"{name}_matmuls")


def _matmul_peak(name, runtime, workdir, batch):
    from keras_mixer.export import load_interpreter, predict, to_tflite

    stack = matmul_stack(name)
    rng = np.random.default_rng(0)
    for variable in stack.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype("float32"))
    int8 = runtime == "matmul_peak_int8"
    path = to_tflite(stack, Path(workdir) / f"{runtime}_b{batch}.tflite", "int8" if int8 else "float32",
                     batch_size=batch, float_io=True,
                     representative_data=rng.uniform(-1, 1, (16, *stack.input_shape[1:])).astype("float32")
                     if int8 else None)
    x = rng.uniform(-1, 1, (batch, *stack.input_shape[1:])).astype("float32")

    def runner(threads):
        interpreter = load_interpreter(path, num_threads=threads)
        return lambda _: predict(interpreter, x)

    return runner, os.path.getsize(path)


TIMM_NAMES = {"mixer_s32": "mixer_s32_224", "mixer_s16": "mixer_s16_224", "mixer_b16": "mixer_b16_224",
              "mixer_b32": "mixer_b32_224", "mixer_l16": "mixer_l16_224", "mixer_l32": "mixer_l32_224"}


def reference_model(name, seed=0):
    """The registered Mixer `name` (or "mixer_tiny") with every weight random (seeded; the zero-initialized head
    too, so logits differ between inputs)."""
    import keras

    import keras_mixer

    keras.utils.set_random_seed(seed)
    if name == "mixer_tiny":
        model = keras_mixer.MLPMixer(**TINY, input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                                     gelu="exact", name=name)
    else:
        model = keras_mixer.create_model(name, classifier_activation=None, gelu="exact")
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.02, variable.shape).astype("float32") + (variable.path.endswith("scale")))
    return model


def images(batch, size, seed=0):
    return np.random.default_rng(seed + 1).uniform(-1, 1, (batch, size, size, 3)).astype("float32")


# --- one runtime, in its own process ---------------------------------------------------------------------------------


def _tflite(model, runtime, workdir, batch):
    from keras_mixer.export import load_interpreter, predict, to_tflite

    mode = runtime.split("_")[1].replace("fp", "float")
    path = to_tflite(model, Path(workdir) / f"{runtime}_b{batch}.tflite", mode, batch_size=batch, float_io=True,
                     representative_data=images(16, model.input_shape[1], seed=7) if mode == "int8" else None,
                     integer_only=runtime == "tflite_int8_integer")

    def runner(threads):
        interpreter = load_interpreter(path, num_threads=threads)
        return lambda x: predict(interpreter, x)

    return runner, os.path.getsize(path)


def _timm(model, compiled):
    import keras
    import timm
    import torch

    from keras_mixer.models.mlp_mixer import official_to_timm

    if model.name == "mixer_tiny":
        reference = timm.models.mlp_mixer.MlpMixer(**TIMM_TINY, img_size=32, num_classes=10)
    else:
        reference = timm.create_model(TIMM_NAMES[model.name], pretrained=False)
    reference.eval()
    state = official_to_timm({v.path: keras.ops.convert_to_numpy(v) for v in model.weights})
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    module = torch.compile(reference) if compiled else reference

    def runner(threads):
        torch.set_num_threads(threads)

        def run(x):
            with torch.inference_mode():
                return module(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()

        return run

    return runner, sum(p.numel() * 4 for p in reference.parameters()), reference


def _litert_torch(model, runtime, workdir, batch):
    import litert_torch
    import torch
    from ai_edge_quantizer import quantizer, recipe

    from keras_mixer.export import load_interpreter, predict

    _, _, reference = _timm(model, compiled=False)
    size = model.input_shape[1]
    path = Path(workdir) / f"litert_torch_fp32_b{batch}.tflite"
    litert_torch.convert(reference, (torch.zeros(batch, 3, size, size),)).export(str(path))
    if runtime != "litert_torch_fp32":
        static = runtime == "litert_torch_static_int8"
        quantizing = quantizer.Quantizer(str(path))
        quantizing.load_quantization_recipe(recipe.static_wi8_ai8() if static else recipe.dynamic_wi8_afp32())
        calibration = None
        if static:  # the same 16 calibration images as our int8 export, one batch at a time, NCHW
            signature, inputs = next(iter(load_interpreter(path).get_signature_list().items()))
            samples = images(16, size, seed=7).transpose(0, 3, 1, 2)
            calibration = quantizing.calibrate({signature: [{inputs["inputs"][0]: samples[i : i + batch]}
                                                            for i in range(0, 16 - batch + 1, batch)]})
        path = Path(workdir) / f"{runtime}_b{batch}.tflite"
        quantizing.quantize(calibration).export_model(str(path))

    def runner(threads):
        interpreter = load_interpreter(path, num_threads=threads)
        return lambda x: predict(interpreter, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    return runner, os.path.getsize(path)


def _onnx(model, workdir, batch, quantized):
    import onnxruntime
    import torch

    _, _, reference = _timm(model, compiled=False)
    path = Path(workdir) / "timm.onnx"
    size = model.input_shape[1]
    torch.onnx.export(reference, torch.zeros(batch, 3, size, size), str(path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    if quantized:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantized_path = Path(workdir) / "timm_int8.onnx"
        quantize_dynamic(str(path), str(quantized_path), weight_type=QuantType.QInt8)
        path = quantized_path

    def runner(threads):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"images": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]

    return runner, os.path.getsize(path)


def _keras_tf(model):
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), jit_compile=False)
    return lambda x: call(tf.constant(x)).numpy()


def _keras_jax(model):
    import jax

    # the weights are arguments, not constants folded into the compiled program
    call = jax.jit(lambda trainable, non_trainable, x: model.stateless_call(trainable, non_trainable, x)[0])
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    return lambda x: np.asarray(call(trainable, non_trainable, x))


def run_one(runtime, name, batch_sizes, threads_list, runs):
    """Measures `runtime` for model `name`; returns a list of result rows. Called in a fresh process."""
    model = reference_model(name)
    size = model.input_shape[1]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for batch in batch_sizes:
            x = images(batch, size)
            expected = np.asarray(model(x, training=False))
            if runtime.startswith("tflite_"):
                runner, file_bytes = _tflite(model, runtime, workdir, batch)
            elif runtime.startswith("litert_torch_"):
                runner, file_bytes = _litert_torch(model, runtime, workdir, batch)
            elif runtime in PEAKS:
                runner, file_bytes = _matmul_peak(name, runtime, workdir, batch)
            elif runtime.startswith("timm_"):
                runner, file_bytes, _ = _timm(model, compiled=runtime == "timm_compile")
            elif runtime.startswith("ort_"):
                runner, file_bytes = _onnx(model, workdir, batch, quantized=runtime == "ort_int8")
            else:  # keras_tf / keras_jax: one thread count per process (see _subprocess)
                build = _keras_jax if runtime == "keras_jax" else _keras_tf
                runner, file_bytes = (lambda threads: build(model)), None
            for threads in threads_list:
                run = runner(threads)
                outputs = run(x)
                median, p90 = timings(lambda: run(x), runs)
                logits = runtime not in PEAKS  # a matmul stack has no logits to compare
                rows.append({"model": name, "runtime": runtime, "batch": batch, "threads": threads,
                             "median_ms": median, "p90_ms": p90, "images_per_s": batch * 1e3 / median,
                             "gmac_per_s": batch * mixer_gmacs(name, mixing_only=not logits) / (median / 1e3),
                             "max_abs_diff_vs_keras": float(np.max(np.abs(outputs - expected))) if logits else None,
                             "argmax_agreement": float(np.mean(outputs.argmax(1) == expected.argmax(1)))
                             if logits else None,
                             "file_mb": file_bytes / 2**20 if file_bytes else None, "peak_rss_mb": peak_rss_mb()})
    return rows


# --- the whole run -------------------------------------------------------------------------------------------------


def _subprocess(runtime, name, batch_sizes, threads_list, runs, timeout):
    backend = "jax" if runtime == "keras_jax" else "tensorflow"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    if runtime == "keras_tf":  # TensorFlow reads its thread pool sizes once, at start-up
        env["TF_NUM_INTRAOP_THREADS"], env["TF_NUM_INTEROP_THREADS"] = str(threads_list[0]), "1"
    # timm (torch, torchvision, triton) must load before TensorFlow (keras_mixer's import): the other order
    # segfaults in triton's import
    preload = "import timm, torch; " if runtime.startswith(("timm_", "ort_", "litert_torch_")) else ""
    command = [sys.executable, "-c", f"import sys; {preload}from keras_mixer.benchmark import main_one; "
               "main_one(sys.argv[1:])", runtime, name, json.dumps(batch_sizes), json.dumps(threads_list), str(runs)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout} s"
    if done.returncode:
        return [], (done.stderr.strip().splitlines() or ["failed"])[-1][:300]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def run_benchmark(models, runtimes=RUNTIMES, batch_sizes=(1, 8), threads=(1, 2), runs=50, output="runs/benchmark",
                  timeout=1800, progress=print, command=None):
    """Runs every (model, runtime) in turn and writes results.json / results.csv / latency.png into `output`, with
    the machine and `command` (what reproduces the run).
    Returns the result dict. Runtimes that fail (e.g. torch.compile without a compiler) are listed with the
    error instead of numbers."""
    output = Path(output)
    require_output_folder(output, KerasMixerError)  # before the measurements, not after them
    rows, failures = [], {}
    for name in models:
        for runtime in runtimes:
            groups = [[t] for t in threads] if runtime in PROCESS_PER_THREAD_COUNT else [list(threads)]
            for group in groups:
                got, error = _subprocess(runtime, name, list(batch_sizes), group, runs, timeout)
                if error:
                    failures[f"{name}/{runtime}"] = error
                    progress(f"{name:<10} {runtime:<13} failed: {error}")
                rows.extend(got)
                for row in got:
                    progress(f"{name:<10} {runtime:<13} batch {row['batch']} threads {row['threads']}: "
                             f"{row['median_ms']:8.2f} ms (p90 {row['p90_ms']:.2f})")
    cells = {(r["model"], r["batch"], r["threads"], r["runtime"]): r for r in rows}
    for row in rows:  # ratios to timm eager and to the matmul peak, same model / batch / threads, same run
        cell = (row["model"], row["batch"], row["threads"])
        base = cells.get((*cell, REFERENCE))
        row["speedup_vs_timm_eager"] = base["median_ms"] / row["median_ms"] if base else None
        peak = cells.get((*cell, PEAKS[0] if row["runtime"] in INT8_RUNTIMES else PEAKS[1]))
        row["share_of_peak"] = row["gmac_per_s"] / peak["gmac_per_s"] if peak else None
    result = {"machine": machine(), "command": command, "runs": runs, "rows": rows, "failures": failures}
    output.mkdir(parents=True, exist_ok=True)
    write_text(output / "results.json", json.dumps(result, indent=2))
    with atomic_path(output / "results.csv") as tmp:
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else ["model"])
            writer.writeheader()
            writer.writerows(rows)
    if rows:
        plot_latency(rows, output / "latency.png")
        write_text(output / "table.md", markdown_table(rows) + "\n")
    return result


# (header, row key, format) of every column a result may hold; a table shows the columns its rows recorded
# (results written before GMAC/s and the peak existed have neither)
TABLE_COLUMNS = (("model", "model", "{}"), ("runtime", "runtime", "{}"), ("batch", "batch", "{}"),
                 ("threads", "threads", "{}"), ("median ms", "median_ms", "{:.2f}"), ("p90 ms", "p90_ms", "{:.2f}"),
                 ("images/s", "images_per_s", "{:.1f}"), ("vs timm eager", "speedup_vs_timm_eager", "{:.2f}x"),
                 ("GMAC/s", "gmac_per_s", "{:.1f}"), ("share of peak", "share_of_peak", "{:.0%}"),
                 ("max \\|Δ\\| vs Keras", "max_abs_diff_vs_keras", "{:.1e}"), ("file MB", "file_mb", "{:.1f}"),
                 ("peak RSS MB", "peak_rss_mb", "{:.0f}"))


def markdown_table(rows):
    """The results as a Markdown table: median / p90 ms, images/s, speed-up over timm eager, GMAC/s and its share of
    the matching matmul peak, logit agreement, file size and peak RSS ("–" where a runtime has no such figure)."""
    recorded = {key for row in rows for key in row}
    columns = [column for column in TABLE_COLUMNS if column[1] in recorded]
    lines = ["| " + " | ".join(header for header, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    order = {runtime: i for i, runtime in enumerate(RUNTIMES)}
    for r in sorted(rows, key=lambda r: (r["model"], r["batch"], r["threads"], order[r["runtime"]])):
        cells = ["–" if r.get(key) is None else form.format(r[key]) for _, key, form in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_latency(rows, path):
    """Grouped bars: median latency per runtime, one group per (model, batch, threads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["model"], r["batch"], r["threads"]) for r in rows})
    runtimes = [rt for rt in RUNTIMES if any(r["runtime"] == rt for r in rows)]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    width = 0.8 / len(runtimes)
    for i, runtime in enumerate(runtimes):
        values = [next((r["median_ms"] for r in rows if r["runtime"] == runtime and
                        (r["model"], r["batch"], r["threads"]) == g), 0) for g in groups]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=runtime)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2,
                  [f"{m}\nbatch {b}, {t} thr" for m, b, t in groups], fontsize=8)
    ax.set_ylabel("median latency (ms)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main_one(argv):
    """Entry point of a runtime's subprocess: prints its result rows as one JSON line."""
    runtime, name, batches, threads_list, runs = argv
    if runtime == "keras_jax":  # XLA sizes its CPU thread pool, on first use, by the cores the process may run on
        os.sched_setaffinity(0, range(json.loads(threads_list)[0]))
    print(json.dumps(run_one(runtime, name, json.loads(batches), json.loads(threads_list), int(runs))))
