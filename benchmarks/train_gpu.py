"""Training throughput on the accelerator this runs on: keras_mixer on every installed Keras backend (JAX, torch, and
TensorFlow when it sees a GPU) against timm eager and timm + torch.compile, the same Mixer, batch and precision.

    python benchmarks/train_gpu.py --output docs/results/train_gpu.json         # Mixer-S/16, B/16, L/16 at 224
    python benchmarks/train_gpu.py --smoke                                      # a tiny Mixer on the CPU, ~1 min
    python benchmarks/train_gpu.py --models mixer_b16 --torch-jit --row-timeout 300  # + Keras' torch.compile step

Each row is one process (a fresh backend and device memory):
- keras_mixer, fed two ways: `device`, one batch already on the device, given to `fit` for every step (the step
  alone; `train_on_batch` in a loop on TensorFlow); `feed`, the trainer's own path (`keras_mixer.training`: uint8
  pixels scaled on the device, placed one step ahead by `batches_ahead`, sharded under a JAX distribution and
  copied from pinned memory on CUDA torch; `fit` with the callbacks that watch each of its steps), from tf.data
  when TensorFlow is installed, else from a synthetic uint8 source. On JAX the `feed` rows run twice: strategy
  "default" and "data_parallel" over the same devices, whose ratio is the cost of the distribution's feed.
- timm eager (`torch.autocast`, fused AdamW) and timm + `torch.compile`, data on the device; both clip the global
  gradient norm as the `scratch` recipe does (`torch.nn.utils.clip_grad_norm_`), so both sides train the same
  function.
With `--torch-jit`, keras_mixer on torch also runs with `jit_compile=True` (torch.compile), data on the device;
`--row-timeout` records a row that takes longer (its compilation included) as not done.
Every row: images/s over the timed steps (warm-up excluded), the first step's seconds (compilation), peak device
memory, MFU at 224: 6 x the forward multiply-accumulates per image (`mixer_gmacs`), against the bf16 matmul rate
measured in the same run (8192^3 on a GPU; float32 at 1024^3 with --smoke on a CPU), and on torch with CUDA how
often per step the host waits for the GPU (torch's sync debug mode).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"models": ["mixer_s16", "mixer_b16", "mixer_l16"], "image_size": 224, "batch_size": 256, "steps": 30,
        "warmup": 5, "precision": "mixed_bfloat16", "matmul": 8192, "drop_path_rate": 0.0, "torch_jit": False,
        "row_timeout": None}
SMOKE = {"models": ["mixer_tiny"], "image_size": 32, "batch_size": 8, "steps": 50, "warmup": 5,
         "precision": "float32", "matmul": 1024, "drop_path_rate": 0.0, "torch_jit": False, "row_timeout": None}
CLASSES = 1000
JIT = "jit_compile"  # the row's last word, and what its backend's label adds: keras_mixer on torch with torch.compile


def synthetic(settings, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    size, batch = settings["image_size"], settings["batch_size"]
    pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    labels = np.eye(CLASSES, dtype=np.float32)[rng.integers(0, CLASSES, batch)]
    return pixels, labels


def device_memory():
    """Peak bytes the process held on its accelerator (None on a CPU)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def keras_row(model_name, settings, feed, strategy, jit_compile="auto"):
    """One keras_mixer row in this process (KERAS_BACKEND chosen by the caller); `jit_compile` as Keras' compile
    takes it (the trainer leaves it at "auto": eager on torch)."""
    import keras

    from keras_mixer.training import compile_model, get_distribution, get_recipe
    from keras_mixer.training.distribute import choose_precision
    from keras_mixer.training.feed import with_pixel_input
    from keras_mixer.training.trainer import step_callbacks

    distribution = get_distribution(strategy)
    policy, why = choose_precision(settings["precision"], distribution)
    keras.config.set_dtype_policy(policy)
    size, batch, steps, warmup = (settings[k] for k in ("image_size", "batch_size", "steps", "warmup"))
    pixels, labels = synthetic(settings)
    on_torch = keras.backend.backend() == "torch"
    with distribution.scope():
        model = keras_mixer_model(model_name, size, settings["drop_path_rate"])
        trainee = with_pixel_input(model)
        compile_model(trainee, get_recipe("scratch", loss="softmax"), total_steps=10_000, global_batch_size=batch,
                      jit_compile=jit_compile)
        placed = keras.ops.convert_to_tensor(pixels), keras.ops.convert_to_tensor(labels)

        def fit(source, callbacks=()):
            # the loss as a Python float: the steps have finished when fit returns
            return lambda count: float(trainee.fit(source, steps_per_epoch=count, epochs=1, verbose=0,
                                                   callbacks=list(callbacks)).history["loss"][-1])

        if feed == "device" and keras.backend.backend() == "tensorflow":
            # TensorFlow's fit would pull a Python generator's tensors through the host (Dataset.from_generator)
            first_step, seconds, waits = measured(
                lambda count: [trainee.train_on_batch(*placed) for _ in range(count)], warmup, steps, on_torch=False)
        elif feed == "device":
            # the same device arrays every step: no copy, and no loss read after each step (train_on_batch reads
            # one), so the host dispatches ahead of the device as in timm's loop
            first_step, seconds, waits = measured(fit(placed for _ in iter(int, 1)), warmup, steps, on_torch)
        else:
            with tempfile.TemporaryDirectory(prefix="train_gpu_") as logs:
                # the callbacks that watch every step of a run (its per-interval backup and validation left out;
                # TensorBoard's writer is TensorFlow's, which a GPU machine may not have)
                callbacks = step_callbacks(logs, tensorboard=installed("tensorflow"))
                first_step, seconds, waits = measured(fit(trainer_feed(pixels, labels, distribution), callbacks),
                                                      warmup, steps, on_torch)
    backend = keras.backend.backend() + (f" + {JIT}" if jit_compile is True else "")
    return {"backend": backend, "feed": feed, "strategy": distribution.name, "precision": policy,
            "precision_choice": why, "images_per_second": steps * batch / seconds,
            "first_step_seconds": first_step, "peak_device_bytes": device_memory(), "host_waits_per_step": waits}


def measured(run, warmup, steps, on_torch):
    """`timed_steps`, then `host_waits_per_step` if `run` trains on torch (None otherwise)."""
    first_step, seconds = timed_steps(run, warmup, steps)
    return first_step, seconds, host_waits_per_step(run) if on_torch else None


def host_waits_per_step(run, steps=4):
    """How often the host waits for the GPU per training step of `run(count)`, on torch with CUDA (None elsewhere).
    torch's sync debug mode warns at each synchronizing call; those of this, the dispatching, thread are counted for
    2n and n steps, whose difference leaves out what each run pays once (its final loss read)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dispatching = threading.current_thread()

    def waits(count):
        seen = []

        def note(message, *details, **options):
            seen.append(threading.current_thread() is dispatching and "synchroniz" in str(message))

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = note  # restored by catch_warnings
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run(count)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum(seen)

    return (waits(2 * steps) - waits(steps)) / steps


def timed_steps(run, warmup, steps):
    """(the first step's seconds, compilation included; the seconds of `steps` steps) of `run(count)`, which trains
    `count` steps and returns when they have finished. It warms up twice: under a JAX distribution the step compiles
    again for its second step and for a second fit (the variables' sharding, then the step's output sharding)."""
    started = time.perf_counter()
    run(1)
    first_step = time.perf_counter() - started
    for _ in range(2):
        run(warmup)
    started = time.perf_counter()
    run(steps)
    return first_step, time.perf_counter() - started


def keras_mixer_model(name, size, drop_path_rate):
    """The registered Mixer `name`, or "mixer_tiny" (`keras_mixer.benchmark.TINY`: --smoke's, whose step compiles
    in seconds on a CPU), at `size` with the benchmark's classes and logits out."""
    from keras_mixer.benchmark import TINY
    from keras_mixer.models import MLPMixer, create_model

    options = dict(input_shape=(size, size, 3), classes=CLASSES, classifier_activation=None,
                   drop_path_rate=drop_path_rate)
    return MLPMixer(**TINY, **options, name=name) if name == "mixer_tiny" else create_model(name, **options)


def trainer_feed(pixels, labels, distribution):
    """The trainer's source for fit: a repeated tf.data stream of the batch when TensorFlow is installed, else the
    same batch from a Python generator (copied per step, as a decoder hands over new arrays); either goes through
    `batches_ahead` (sharded under a JAX distribution, copied from pinned memory for torch on CUDA), as in `train`."""
    from keras_mixer.training.feed import batches_ahead, fit_data

    try:
        import tensorflow as tf
    except ImportError:
        tf = None
    if tf is not None:
        dataset = tf.data.Dataset.from_tensors((pixels, labels)).repeat().prefetch(tf.data.AUTOTUNE)
        return fit_data(dataset, distribution, len(pixels))
    return batches_ahead(((pixels.copy(), labels.copy()) for _ in iter(int, 1)), distribution)


def timm_row(model_name, settings, compiled):
    """timm's Mixer, the same batch, AdamW (fused on CUDA) after the recipe's global-norm clipping, bf16 autocast on
    a GPU; data on the device."""
    import timm
    import torch

    from keras_mixer.benchmark import TIMM_TINY
    from keras_mixer.training import get_recipe

    size, batch, steps, warmup = (settings[k] for k in ("image_size", "batch_size", "steps", "warmup"))
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    options = dict(img_size=size, num_classes=CLASSES, drop_path_rate=settings["drop_path_rate"])
    if model_name == "mixer_tiny":
        model = timm.models.mlp_mixer.MlpMixer(**TIMM_TINY, **options)
    else:
        model = timm.create_model(f"{model_name}_224", **options)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, fused=cuda)
    clip = get_recipe("scratch").clip_global_norm  # keras_row's optimizer clips at the same norm
    pixels, labels = synthetic(settings)
    x = torch.from_numpy(pixels).to(device).permute(0, 3, 1, 2)
    y = torch.from_numpy(labels).to(device)
    bf16 = settings["precision"] == "mixed_bfloat16"

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.float() / 127.5 - 1.0)
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        return loss

    step = torch.compile(step) if compiled else step
    # the last loss read back: the steps have finished (the steps before it queue up on the GPU, as in keras_row)
    first_step, seconds, waits = measured(lambda count: [step() for _ in range(count)][-1].item(), warmup, steps,
                                          on_torch=True)
    return {"backend": "timm + torch.compile" if compiled else "timm eager", "feed": "device", "strategy": "-",
            "precision": "bf16 autocast" if bf16 else "float32", "images_per_second": steps * batch / seconds,
            "first_step_seconds": first_step, "peak_device_bytes": device_memory(), "host_waits_per_step": waits}


def matmul_peak(settings):
    """FLOP/s of an n^3 matmul on this process's accelerator, bf16 on a GPU (float32 on a CPU), best of 10."""
    n = settings["matmul"]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        device, dtype = ("cuda", torch.bfloat16) if torch.cuda.is_available() else ("cpu", torch.float32)
        a = torch.randn(n, n, device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        product = lambda: a @ a  # noqa: E731
    else:
        import jax
        import jax.numpy as jnp

        dtype = jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
        a = jnp.ones((n, n), dtype)
        product = jax.jit(lambda: a @ a)
        sync = lambda: None  # noqa: E731
    best = float("inf")
    for _ in range(12):
        started = time.perf_counter()
        result = product()
        if hasattr(result, "block_until_ready"):
            result.block_until_ready()
        sync()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def tensorflow_sees_gpu():
    code = "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)"
    return installed("tensorflow") and subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def plan(settings, smoke):
    """(KERAS_BACKEND or None, what to run) of every row (`processes` says which process runs it)."""
    backends = [b for b in ("jax", "torch") if installed(b)]
    if installed("tensorflow") and (smoke or tensorflow_sees_gpu()):
        backends.append("tensorflow")
    rows = []
    for model in settings["models"]:
        for backend in backends:
            rows.append((backend, ["keras", model, "device", "default"]))
            rows.append((backend, ["keras", model, "feed", "default"]))
            if backend == "torch" and settings["torch_jit"]:
                rows.append((backend, ["keras", model, "device", "default", JIT]))
            if backend == "jax":
                rows.append((backend, ["keras", model, "feed", "data_parallel"]))
        if installed("timm") and installed("torch"):
            rows.append((None, ["timm", model, "eager"]))
            if not smoke:  # torch.compile needs a C compiler toolchain and minutes on a CPU
                rows.append((None, ["timm", model, "compiled"]))
    return rows


def processes(rows, smoke):
    """The (KERAS_BACKEND or None, rows) of each process: one row each on an accelerator (a fresh device: a row's
    peak memory, a crash or a timeout stay its own); with --smoke one process per backend, the rows that need none
    (the matmul peak, timm) in the first: start-up was most of a tiny row's time (the smoke test took 80 s in ten
    processes, 45 s in four)."""
    if not smoke:
        return [(backend, [what]) for backend, what in rows]
    groups = {}
    for backend, what in rows:
        groups.setdefault(backend, []).append(what)
    backendless = groups.pop(None, [])
    if not groups:
        return [(None, backendless)]
    first, *others = groups.items()
    return [(first[0], backendless + first[1]), *others]


def run_rows(backend, whats, settings):
    """The rows `whats`, in order, from one process with KERAS_BACKEND `backend`; a row that process did not
    finish is recorded with its error."""
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if backend:
        environment["KERAS_BACKEND"] = backend
    command = [sys.executable, __file__, "--rows", json.dumps(whats), "--settings", json.dumps(settings)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=environment,
                                timeout=None if whats == [["peak"]] else settings["row_timeout"])
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        errors = [line for line in result.stderr.splitlines() if "Error" in line or "error" in line]
        error = (errors or result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1][:300]
    except subprocess.TimeoutExpired:
        lines, error = [], (f"not done within {settings['row_timeout']} s (start-up and the first step's "
                            "compilation included)")
    rows = []
    for index, what in enumerate(whats):
        if index < len(lines):
            rows.append(lines[index] if what[0] == "peak" else {"model": what[1], **lines[index]})
        elif what[0] == "peak":
            raise SystemExit(f"the matmul peak could not be measured: {error}")
        else:
            label = (backend or what[0]) + (f" + {JIT}" if what[4:] == [JIT] else "")
            rows.append({"backend": label, "feed": what[2], "model": what[1], "error": error})
    return rows


def one_row(what, settings):
    """One row, in this process: ["keras", model, feed, strategy] (+ "jit_compile"), ["timm", model, "eager" |
    "compiled"] or ["peak"] (the matmul rate)."""
    kind = what[0]
    if kind == "peak":
        return {"matmul_flops": matmul_peak(settings)}
    model = what[1]
    if kind == "timm":
        return timm_row(model, settings, compiled=what[2] == "compiled")
    return keras_row(model, settings, feed=what[2], strategy=what[3],
                     jit_compile=True if what[4:] == [JIT] else "auto")


def accelerator_machine():
    """`keras_mixer.machine.machine()` and the GPU the rows ran on (None on a CPU)."""
    from keras_mixer.machine import machine

    description = machine()
    description["gpu"] = None
    if installed("torch"):
        import torch

        if torch.cuda.is_available():
            description["gpu"] = torch.cuda.get_device_name()
    return description


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny Mixer on this CPU, to check the script (~1 min)")
    parser.add_argument("--models", nargs="+", help="registered Mixer names (default: mixer_s16 mixer_b16 mixer_l16)")
    parser.add_argument("--backends", nargs="+", choices=["jax", "torch", "tensorflow", "timm"],
                        help="measure only these (default: every one installed)")
    for option in ("image_size", "batch_size", "steps"):
        parser.add_argument(f"--{option.replace('_', '-')}", type=int, help="override the setting (see --smoke)")
    parser.add_argument("--drop-path-rate", type=float, help="stochastic depth in both models (default 0; the "
                        "scratch recipe's is 0.1): what eager torch pays per random draw")
    parser.add_argument("--torch-jit", action="store_true", help="also keras_mixer on torch with jit_compile=True "
                        "(torch.compile), data on the device")
    parser.add_argument("--row-timeout", type=int, help="seconds a row may take, start-up and compilation included; "
                        "a row past it is recorded as not done (default: no limit)")
    parser.add_argument("--output", help="write the rows, the machine and the command to this JSON file")
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = dict(SMOKE if args.smoke else FULL)
    settings.update({key: value for key, value in (("models", args.models), ("image_size", args.image_size),
                     ("batch_size", args.batch_size), ("steps", args.steps),
                     ("drop_path_rate", args.drop_path_rate), ("torch_jit", args.torch_jit),
                     ("row_timeout", args.row_timeout)) if value})
    if args.rows:
        for what in json.loads(args.rows):
            print(json.dumps(one_row(what, json.loads(args.settings))), flush=True)
        return 0
    # this process reads model sizes and the machine through Keras: any installed backend will do (a GPU machine may
    # have no TensorFlow, Keras' default); each row picks its own
    os.environ.setdefault("KERAS_BACKEND", next(b for b in ("tensorflow", "jax", "torch") if installed(b)))
    from keras_mixer.benchmark import mixer_gmacs

    planned = [(None, ["peak"])] + [(backend, what) for backend, what in plan(settings, args.smoke)
                                    if not args.backends or (backend or "timm") in args.backends]
    peak, *rows = [row for backend, whats in processes(planned, args.smoke)
                   for row in run_rows(backend, whats, settings)]
    peak = peak["matmul_flops"]
    for row in rows:
        if "images_per_second" in row and settings["image_size"] == 224:  # mixer_gmacs counts a 224x224 image
            row["mfu"] = row["images_per_second"] * 6e9 * mixer_gmacs(row["model"]) / peak
        print(json.dumps(row), flush=True)
    default = {(row["model"], row["backend"]): row for row in rows
               if row.get("feed") == "feed" and row.get("strategy") == "default"}
    for row in rows:
        base = default.get((row["model"], row["backend"]))
        if row.get("strategy") == "data_parallel" and base and "images_per_second" in base:
            ratio = base["images_per_second"] / row["images_per_second"]
            print(f"{row['model']} on {row['backend']}: data_parallel costs {ratio:.3f}x the default per step")
    result = {"settings": settings, "matmul_peak_flops": peak, "machine": accelerator_machine(), "rows": rows,
              "command": "python benchmarks/train_gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    failed = [row for row in rows if "error" in row]
    return 1 if failed and args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
