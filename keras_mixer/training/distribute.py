"""One switch for where training runs: tf.distribute strategies on the TensorFlow backend, keras.distribution on
JAX, and the matching mixed-precision policy."""

import contextlib
import dataclasses
import difflib
import json
import os

import keras

from keras_mixer.errors import TrainingError

TF_STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
JAX_STRATEGIES = ("default", "data_parallel", "model_parallel")


@dataclasses.dataclass
class Distribution:
    """What `get_distribution` picked: `scope()` wraps model building and compiling; `num_replicas` is how many
    copies of the model each global batch is split over; `worker_index` / `num_workers` for multi-machine runs
    (only worker 0 should write shared files)."""

    name: str
    num_replicas: int
    scope: object  # a zero-argument callable returning a context manager
    worker_index: int = 0
    num_workers: int = 1
    strategy: object = None  # the tf.distribute.Strategy or keras.distribution.Distribution itself

    @property
    def is_chief(self):
        return self.worker_index == 0


def _tf_config():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = config.get("cluster", {}).get("worker", [])
    task = config.get("task", {})
    return len(workers), int(task.get("index", 0)) if task.get("type", "worker") == "worker" else 0


def multi_worker_configured():
    """True when $TF_CONFIG describes a cluster of several workers."""
    return _tf_config()[0] > 1


def get_distribution(name="auto", tpu=None):
    """The strategy for `name`:

    - TensorFlow backend: "default" (one CPU/GPU), "mirrored" (all local GPUs, or the logical CPUs configured),
      "multi_worker" (several machines described by $TF_CONFIG, synchronous all-reduce), "tpu" (a TPU VM, or the
      pod/node named by `tpu`); "auto" picks TPU if one answers, else multi_worker when $TF_CONFIG lists
      several workers, else mirrored with more than one GPU, else default.
    - JAX backend: "default", "data_parallel" (keras.distribution.DataParallel over all devices),
      "model_parallel" (a 2-D device mesh, Dense kernels sharded over the "model" axis); "auto" is data_parallel
      with more than one device.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow_distribution(name, tpu)
    if backend == "jax":
        return _jax_distribution(name)
    if name not in ("auto", "default"):
        raise TrainingError(f"strategy {name!r} needs the tensorflow or jax backend (running {backend})")
    return Distribution("default", 1, contextlib.nullcontext)


def _unknown_strategy(name, backend):
    """The TrainingError for a strategy `backend` does not have: the other backend's names it (each backend
    distributes with its own API), a near miss gets its spelling."""
    strategies = {"tensorflow": TF_STRATEGIES, "jax": JAX_STRATEGIES}
    other = "jax" if backend == "tensorflow" else "tensorflow"
    known = ("auto",) + strategies[backend]
    if name in strategies[other]:
        hint = f"; {name!r} is a {other} strategy: run with KERAS_BACKEND={other}"
    else:
        near = difflib.get_close_matches(str(name), known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
    return TrainingError(f"unknown strategy {name!r} on the {backend} backend (one of {', '.join(known)}){hint}")


def _tensorflow_distribution(name, tpu):
    import tensorflow as tf

    if name not in TF_STRATEGIES + ("auto",):
        raise _unknown_strategy(name, "tensorflow")
    num_workers, worker_index = _tf_config()
    if name == "auto":
        if tpu is not None:
            name = "tpu"
        elif num_workers > 1:
            name = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "tpu":
        strategy = _tpu_strategy(tpu)
    elif name == "multi_worker":
        if num_workers < 1:
            raise TrainingError("strategy 'multi_worker' needs $TF_CONFIG with the cluster's workers and this "
                                "task's index (see examples/multi_worker.py)")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
        num_workers, worker_index = 1, 0
    return Distribution(name, strategy.num_replicas_in_sync, strategy.scope, worker_index, max(num_workers, 1),
                        strategy)


def _tpu_strategy(tpu):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise TrainingError(f"no TPU found ({tpu or 'local'}): {str(error).splitlines()[0]}. On a TPU VM run "
                            "with --strategy tpu; for a pod/node pass its name with --tpu") from error
    return tf.distribute.TPUStrategy(resolver)


def _jax_distribution(name):
    if name not in JAX_STRATEGIES + ("auto",):
        raise _unknown_strategy(name, "jax")
    devices = keras.distribution.list_devices()
    if name == "auto":
        name = "data_parallel" if len(devices) > 1 else "default"
    if name == "default":
        return Distribution("default", 1, contextlib.nullcontext)
    if name == "data_parallel":
        distribution = keras.distribution.DataParallel(devices=devices)
        replicas = len(devices)
    else:
        model_axis = 2 if len(devices) % 2 == 0 else 1
        mesh = keras.distribution.DeviceMesh((len(devices) // model_axis, model_axis), ["batch", "model"], devices)
        layout = keras.distribution.LayoutMap(mesh)
        layout[".*kernel"] = (None, "model")  # Dense kernels: output features split over the model axis
        distribution = keras.distribution.ModelParallel(layout_map=layout, batch_dim_name="batch")
        replicas = len(devices) // model_axis
    import jax  # several hosts (after keras.distribution.initialize): only process 0 writes the run's files

    return Distribution(name, replicas, distribution.scope, jax.process_index(), jax.process_count(), distribution)


def connect_hosts(coordinator, num_hosts, host_index):
    """Joins this process to a multi-host JAX run (call on every host before building anything): `coordinator` is
    "address:port" of host 0. `get_distribution("data_parallel")` then spans the devices of all hosts and each host
    reads its own share of every global batch."""
    if keras.backend.backend() != "jax":
        raise TrainingError("several hosts need the JAX backend (KERAS_BACKEND=jax): Keras 3's fit does not run "
                            "under tf.distribute.MultiWorkerMirroredStrategy yet (keras-team/keras#20585)")
    if not 0 <= host_index < num_hosts:
        raise TrainingError(f"host index {host_index} is outside 0..{num_hosts - 1}")
    # blocks until every host has joined: say what it waits for
    print(f"host {host_index} of {num_hosts}: waiting for all hosts to join the coordinator at {coordinator}",
          flush=True)
    keras.distribution.initialize(coordinator, num_hosts, host_index)
    print(f"host {host_index}: {num_hosts} hosts joined", flush=True)


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
BF16_COMPUTE_CAPABILITY = 8.0  # NVIDIA GPUs with bfloat16 tensor cores: A100, H100, H200, RTX 30xx and later


def accelerator():
    """("tpu" | "gpu" | "cpu", name, CUDA compute capability or None) of the device Keras' backend trains on."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        capability = getattr(device, "compute_capability", None)  # "9.0" on CUDA devices
        kind = {"tpu": "tpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu"}.get(device.platform, "cpu")
        return kind, device.device_kind, float(capability) if capability else None
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return "gpu", torch.cuda.get_device_name(), major + minor / 10
        return "cpu", "CPU", None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU"):
            return "tpu", "TPU", None
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            major, minor = details.get("compute_capability", (0, 0))
            return "gpu", details.get("device_name", "GPU"), major + minor / 10
    return "cpu", "CPU", None


def choose_precision(policy="auto", distribution=None):
    """(Keras dtype policy, why) for `policy`: "auto" is mixed_bfloat16 on TPUs and on GPUs with bfloat16 tensor
    cores (compute capability >= 8.0), mixed_float16 (with loss scaling) on older GPUs, float32 on CPUs. An explicit
    policy the device cannot run at speed is refused: bfloat16 on a GPU without bfloat16 tensor cores, float16 on
    a TPU."""
    if policy not in PRECISIONS + ("auto",):
        raise TrainingError(f"unknown precision {policy!r}; use auto, {', '.join(PRECISIONS)}")
    kind, name, capability = accelerator()
    if distribution is not None and distribution.name == "tpu":
        kind, name = "tpu", "TPU"
    where = f"{name} (compute capability {capability:.1f})" if capability else name
    if policy == "auto":
        if kind == "tpu" or (kind == "gpu" and capability and capability >= BF16_COMPUTE_CAPABILITY):
            return "mixed_bfloat16", f"auto: bfloat16 matmuls on {where}"
        if kind == "gpu":
            return "mixed_float16", f"auto: {where} has no bfloat16 tensor cores; float16 with loss scaling"
        return "float32", f"auto: no GPU or TPU ({keras.backend.backend()} sees {where})"
    if policy == "mixed_bfloat16" and kind == "gpu" and (capability or 0) < BF16_COMPUTE_CAPABILITY:
        raise TrainingError(f"--precision mixed_bfloat16: {where} has no bfloat16 tensor cores (compute capability "
                            f"{BF16_COMPUTE_CAPABILITY} or later); use mixed_float16 or auto")
    if policy == "mixed_float16" and kind == "tpu":
        raise TrainingError("--precision mixed_float16: TPUs compute in bfloat16, not float16; use mixed_bfloat16 "
                            "or auto")
    return policy, f"as asked, on {where}"


def set_precision(policy="auto", distribution=None):
    """Sets Keras' global dtype policy as `choose_precision` picks it (call before building the model); returns
    the policy."""
    policy, _ = choose_precision(policy, distribution)
    keras.config.set_dtype_policy(policy)
    return policy


def under_global_policy(model):
    """`model`, or a copy of it with its weights whose layers compute under Keras' global dtype policy. A `.keras`
    file records each layer's policy (float32 when it was trained in float32), while a layer's sub-layers take the
    global policy when it builds them: loaded under a mixed policy, a block would compute in float32 around
    bfloat16 sub-layers and fail at its residual sum. Fake-quant layers keep their float32 (`ActivationQuantizer`)."""
    policy = keras.config.dtype_policy().name

    def follows(layer):
        return isinstance(layer, keras.layers.InputLayer) or getattr(layer, "is_fake_quant", False)

    if all(follows(layer) or layer.dtype_policy.name == policy for layer in model.layers):
        return model

    def clone(layer):
        config = layer.get_config()
        if not follows(layer):
            config["dtype"] = policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
