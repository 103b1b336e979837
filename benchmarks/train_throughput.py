"""Images/s of one training step (forward + backward + AdamW update, the digits/scratch recipe objects) for a
registered model on this machine: Keras on the TensorFlow, JAX and torch backends and timm (PyTorch eager, AdamW)
side by side, each in its own process (`--jit-compile off on` adds XLA / torch.compile rows). Both sides compute
the same function: `--gelu tanh` is the official Mixer's GELU (our default; timm is given it as its activation),
`--gelu exact` the erf form (timm's default); each Keras row is compared with timm's row of the same form.
`--rounds N` repeats the whole set N times, interleaved, and reports each row's median (this shared VM drifts by
+-15 % between minutes).
Random data; warm-up excluded. Also the achieved GFLOP/s (a training step is ~3x the forward pass: 6 FLOPs per forward
multiply-accumulate) against the machine's float32 matmul peak measured in the same run (the best of TensorFlow's
and torch's 2048x2048 matmul on all cores).

    python benchmarks/train_throughput.py mixer_s16 --batch-size 32 --steps 10 --output docs/results/train_throughput.json

`--output` adds this run (its rows, the machine and the command) to a JSON file of runs, replacing an earlier run of
the same command: the pages' training tables are rendered from it (benchmarks/figures.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(model_name, batch_size, steps, image_size, gelu, jit_compile="auto"):
    import keras
    import numpy as np

    from keras_mixer.models import create_model
    from keras_mixer.training import compile_model, get_recipe

    model = create_model(model_name, input_shape=(image_size, image_size, 3), classifier_activation=None,
                         drop_path_rate=0.1, gelu=gelu)
    jit = {"auto": "auto", "on": True, "off": False}[jit_compile]
    compile_model(model, get_recipe("scratch", loss="softmax"), total_steps=10_000, global_batch_size=batch_size,
                  jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = np.eye(1000, dtype="float32")[rng.integers(0, 1000, batch_size)]
    model.fit(images, labels, batch_size=batch_size, epochs=2, verbose=0)  # trace + warm-up
    repeated_images, repeated_labels = np.repeat(images, steps, 0), np.repeat(labels, steps, 0)
    started = time.perf_counter()
    model.fit(repeated_images, repeated_labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    # JAX always compiles (jax.jit); jit_compile means XLA on TensorFlow and torch.compile on torch
    backend = keras.backend.backend()
    backend += " jit_compile" if model.jit_compile and backend != "jax" else ""
    row = {"backend": backend, "gelu": gelu, "images_per_second": steps * batch_size / seconds,
           "ms_per_step": 1000 * seconds / steps}
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        sys.path.insert(0, os.path.dirname(__file__))
        from tflite_latency import gflops

        row["forward_gmacs"] = gflops(model)
        row["matmul_peak_gflops"] = matmul_peak_gflops(tf.matmul, lambda n: tf.random.uniform((n, n)))
    return row


def matmul_peak_gflops(matmul, make, size=2048, runs=20):
    a, b = make(size), make(size)
    for _ in range(3):
        matmul(a, b)
    started = time.perf_counter()
    for _ in range(runs):
        matmul(a, b)
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def timm_reference(model_name, image_size, gelu):
    """timm's Mixer in training mode with the GELU form `gelu` ("tanh" or "exact"), and its AdamW optimizer."""
    import functools

    import timm
    import torch

    activation = functools.partial(torch.nn.GELU, approximate="tanh" if gelu == "tanh" else "none")
    model = timm.create_model(f"{model_name}_224", pretrained=False, img_size=image_size, drop_path_rate=0.1,
                              act_layer=activation).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


def measure_timm(model_name, batch_size, steps, image_size, gelu):
    import torch

    model, optimizer = timm_reference(model_name, image_size, gelu)
    images = torch.rand(batch_size, 3, image_size, image_size) * 2 - 1
    labels = torch.randint(0, 1000, (batch_size,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for _ in range(2):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - started
    peak = matmul_peak_gflops(lambda a, b: torch.mm(a, b), lambda n: torch.rand(n, n))
    return {"backend": "timm (torch eager)", "gelu": gelu, "images_per_second": steps * batch_size / seconds,
            "ms_per_step": 1000 * seconds / steps, "matmul_peak_gflops": peak}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="mixer_s16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--gelu", nargs="+", choices=["tanh", "exact"], default=["tanh"],
                        help="GELU forms to measure, each on every backend and timm: tanh (the official Mixer's) or "
                             "exact (erf, timm's default)")
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax", "torch", "timm"])
    parser.add_argument("--jit-compile", nargs="+", choices=["auto", "on", "off"], default=["auto"],
                        help="Keras' jit_compile settings to measure on TensorFlow (XLA) and torch (torch.compile); "
                             "JAX always compiles")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run this often, interleaved; medians")
    parser.add_argument("--output", help="a JSON file of runs to add this one to")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if os.environ.get("KERAS_BACKEND") == "timm":
            row = measure_timm(args.model, args.batch_size, args.steps, args.image_size, args.gelu[0])
        else:
            row = measure(args.model, args.batch_size, args.steps, args.image_size, args.gelu[0], args.jit_compile[0])
        print(json.dumps(row))
        return
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, {os.cpu_count()} CPU cores, "
          f"median of {args.rounds} round(s)")
    measured = {}
    runs = [(gelu, backend, jit) for gelu in args.gelu for backend in args.backends
            for jit in (args.jit_compile if backend in ("tensorflow", "torch") else ["auto"])]
    for gelu, backend, jit in runs * args.rounds:
        command = [sys.executable, __file__, args.model, "--child", "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--image-size", str(args.image_size), "--jit-compile", jit,
                   "--gelu", gelu]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode:
            print(f"{backend:<20} failed: {result.stderr.strip().splitlines()[-1]}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        measured.setdefault((row["backend"], gelu), []).append(row)
    rows = [{**runs_of_row[0], **{key: statistics.median(r[key] for r in runs_of_row)
                                  for key in ("images_per_second", "ms_per_step")}}
            for runs_of_row in measured.values()]
    gmacs = next((r["forward_gmacs"] for r in rows if "forward_gmacs" in r), None)
    peak = max((r["matmul_peak_gflops"] for r in rows if "matmul_peak_gflops" in r), default=None)
    timm_rates = {r["gelu"]: r["images_per_second"] for r in rows if r["backend"].startswith("timm")}
    for row in rows:
        line = (f"{row['backend']:<20} gelu {row['gelu']:<6}{row['images_per_second']:>7.1f} images/s"
                f"{row['ms_per_step']:>7.0f} ms/step")
        if row["gelu"] in timm_rates:
            line += f"  {row['images_per_second'] / timm_rates[row['gelu']]:>5.2f}x timm"
        if gmacs and peak:
            achieved = row["images_per_second"] * 6 * gmacs
            line += f"  {achieved:>6.1f} GFLOP/s = {achieved / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak"
        print(line)
    if args.output:
        add_run(args.output, {"model": args.model, "batch_size": args.batch_size, "image_size": args.image_size,
                              "rounds": args.rounds, "forward_gmacs": gmacs, "matmul_peak_gflops": peak, "rows": rows})


def add_run(path, run):
    """Adds `run` (with the machine and the command) to the JSON file of runs at `path`, replacing an earlier run of
    the same command."""
    from keras_mixer.machine import machine
    from keras_mixer.io_utils import write_text

    script = os.path.relpath(os.path.abspath(sys.argv[0]), os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    backend = [f"KERAS_BACKEND={os.environ['KERAS_BACKEND']}"] if "KERAS_BACKEND" in os.environ else []
    run = {"machine": machine(), "command": " ".join([*backend, "python", script, *sys.argv[1:]]), **run}
    runs = json.loads(open(path).read())["runs"] if os.path.exists(path) else []
    runs = [r for r in runs if r["command"] != run["command"]] + [run]
    write_text(path, json.dumps({"runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
