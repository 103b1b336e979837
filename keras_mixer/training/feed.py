"""How batches reach the accelerator: as uint8 pixels (4x fewer bytes than float32), scaled to the model's [-1, 1]
input on the device, placed one step ahead of the step that reads them, and split along the batch axis under a
JAX distribution.

Why the trainer does not hand Keras its tf.data pipeline as it is under a JAX distribution (Keras 3.15,
`keras/src/backend/jax/trainer.py`): without a distribution Keras' iterator moves batch k+1 to the device while
step k runs, but with one it places each batch synchronously when the step asks for it, which cost 8x in images/s
on one H200 (Mixer-B/16, batch 256, float32 batches). `device_batches` places the next batch, sharded, before it
yields the current one; Keras then finds it already where its layout says (`jax.device_put` of an array onto its
own sharding is free). Several JAX hosts keep Keras' own path, which reads each host's share of the global batch
(tf.data rebatching).

Why the trainer does not hand Keras the pipeline on torch with CUDA (Keras 3.15, `get_torch_dataloader` in
`keras/src/trainers/data_adapters/data_adapter_utils.py`): Keras converts each NumPy batch with
`torch.as_tensor(..., device="cuda")` when the step asks for it, a copy from pageable memory that the host waits
for and the GPU runs only after the step before has finished, so every step starts with an idle GPU and a host that
has not dispatched anything. `cuda_batches` copies each batch from pinned memory on a side stream, in a feeder
thread, while earlier steps run (timm's `PrefetchLoader` and torch's `pin_memory` thread do the same); the step's
stream waits on the GPU for that batch's copy, never the host.
"""

import queue
import threading

import keras

from keras_mixer.errors import TrainingError

PIXELS = "pixels"  # the name of the uint8 input of the model that trains


def with_pixel_input(model):
    """A model that takes uint8 pixels in [0, 255] and feeds `model` their `preprocess_input` scaling,
    pixels / 127.5 - 1, computed on the device. It shares every layer and variable with `model`, so training it
    trains `model`, which keeps its documented [-1, 1] float input for saving and export."""
    if len(model.inputs) != 1:
        raise TrainingError(f"model {model.name!r} has {len(model.inputs)} inputs; training feeds one image input")
    pixels = keras.Input(model.input_shape[1:], dtype="uint8", name=PIXELS)
    # float32 whatever the dtype policy: the model's first layer casts to its compute dtype, as for a float input
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0, dtype="float32", name="preprocess_input")(pixels)
    return keras.Model(pixels, model(scaled), name=model.name)


def fit_data(dataset, distribution, batch_size, repeat=False):
    """What `fit` and `evaluate_model` are given for `dataset` (batches of `batch_size`) under `distribution`
    (`get_distribution`'s): `batches_ahead` over it on the JAX backend under a keras.distribution in one process
    and on torch with CUDA (`repeat`: its passes one after another, as validation after every interval reads them);
    otherwise the tf.data dataset itself, which Keras moves one batch ahead without a distribution and splits into
    the hosts' shares with several hosts. Under a keras.distribution an evaluation's batches are padded to
    `batch_size` first (`_padded`): Keras splits only batches of known size, and a full batch splits evenly over the
    devices."""
    keras_distribution = isinstance(distribution.strategy, KERAS_DISTRIBUTIONS)
    if keras_distribution and dataset.element_spec[0].shape[0] is None:
        dataset = _padded(dataset, batch_size)  # an evaluation (not drop_remainder): its last batch may be short
    if keras_distribution and distribution.num_workers > 1:
        return dataset
    if not keras_distribution and not torch_on_cuda():
        return dataset
    return batches_ahead((dataset.repeat() if repeat else dataset).as_numpy_iterator(), distribution)


KERAS_DISTRIBUTIONS = (keras.distribution.DataParallel, keras.distribution.ModelParallel)


def batches_ahead(batches, distribution):
    """`batches` (an iterator of tuples of NumPy arrays) placed where the step reads them, each while the step before
    it runs: sharded by `device_batches` under a keras.distribution in one process, copied by `cuda_batches` for
    Keras on torch with CUDA; otherwise `batches` themselves, which Keras' own iterator moves."""
    if isinstance(distribution.strategy, KERAS_DISTRIBUTIONS) and distribution.num_workers == 1:
        return device_batches(batches, distribution.strategy)
    return cuda_batches(batches) if torch_on_cuda() else batches


def torch_on_cuda():
    """True when Keras runs on torch and places its tensors on a CUDA device."""
    return keras.backend.backend() == "torch" and keras.ops.convert_to_tensor(0).device.type == "cuda"


def _padded(dataset, batch_size):
    """(images, labels, weights) batches of exactly `batch_size`, zero images of weight 0 completing the last."""
    import tensorflow as tf

    def pad(images, labels):
        count = tf.shape(images)[0]
        missing = batch_size - count
        weights = tf.concat([tf.ones([count]), tf.zeros([missing])], axis=0)
        images = tf.pad(images, [[0, missing]] + [[0, 0]] * (images.shape.rank - 1))
        labels = tf.pad(labels, [[0, missing], [0, 0]])
        return (tf.ensure_shape(images, [batch_size, *images.shape[1:]]),
                tf.ensure_shape(labels, [batch_size, labels.shape[1]]), tf.ensure_shape(weights, [batch_size]))

    return dataset.map(pad)


def device_batches(batches, strategy):
    """Batches (tuples of NumPy arrays) laid out by `strategy` (a keras.distribution DataParallel or ModelParallel),
    each placed while the step before it runs."""
    pending = None
    for batch in batches:
        placed = tuple(keras.distribution.distribute_tensor(array, strategy.get_data_layout(array.shape))
                       for array in batch)
        if pending is not None:
            yield pending
        pending = placed
    if pending is not None:
        yield pending


def cuda_batches(batches, depth=2):
    """Batches (tuples of NumPy arrays) as torch tensors on Keras' CUDA device. A feeder thread copies each into
    pinned host memory and from there to the GPU on its own stream, up to `depth` batches ahead; the step's stream
    waits for that copy alone (an event), so the host never waits for the GPU to take a batch."""
    import torch

    device = keras.ops.convert_to_tensor(0).device
    copies = torch.cuda.Stream(device)

    def place(batch):
        with torch.cuda.stream(copies):
            tensors = tuple(_pinned(array).to(device, non_blocking=True) for array in batch)
            copied = torch.cuda.Event()
            copied.record(copies)
        return tensors, copied

    for tensors, copied in ahead(batches, place, depth):
        step_stream = torch.cuda.current_stream(device)
        step_stream.wait_event(copied)
        for tensor in tensors:  # the caching allocator must not hand the memory to the copy stream while a step reads it
            tensor.record_stream(step_stream)
        yield tensors


def _pinned(array):
    """A page-locked host copy of `array` (one copy; tf.data's NumPy arrays are read-only, so torch.from_numpy would
    warn and pin_memory would copy a second time)."""
    import numpy as np
    import torch

    pinned = torch.empty(array.shape, dtype=torch.from_numpy(np.empty(0, array.dtype)).dtype, pin_memory=True)
    pinned.numpy()[...] = array
    return pinned


_END = object()


class _Failed:
    def __init__(self, error):
        self.error = error


def ahead(items, place, depth):
    """`place(item)` for each of `items`, in order, computed by a feeder thread while the consumer works, at most
    `depth` placed items waiting. An error raised by `items` or `place` is raised here; closing this generator (or
    dropping it, as Keras drops a repeated stream at the end of fit) stops the thread."""
    placed = queue.Queue(depth)
    stop = threading.Event()

    def offer(entry):
        while not stop.is_set():
            try:
                placed.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed():
        try:
            for item in items:
                if not offer(place(item)):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            offer(_Failed(error))
            return
        offer(_END)

    feeder = threading.Thread(target=feed, name="keras_mixer-feed", daemon=True)
    feeder.start()
    try:
        while (entry := placed.get()) is not _END:
            if isinstance(entry, _Failed):
                raise entry.error
            yield entry
    finally:
        stop.set()
        feeder.join()
