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
"""

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
    (`get_distribution`'s): on the JAX backend under a keras.distribution in one process, `device_batches` over it
    (`repeat`: its passes one after another, as validation after every interval reads them); otherwise the tf.data
    dataset itself, which Keras moves one batch ahead without a distribution and splits into the hosts' shares with
    several hosts. Under a keras.distribution an evaluation's batches are padded to `batch_size` first (`_padded`):
    Keras splits only batches of known size, and a full batch splits evenly over the devices."""
    keras_distributions = (keras.distribution.DataParallel, keras.distribution.ModelParallel)
    if not isinstance(distribution.strategy, keras_distributions):
        return dataset
    if dataset.element_spec[0].shape[0] is None:  # an evaluation (not drop_remainder): its last batch may be short
        dataset = _padded(dataset, batch_size)
    if distribution.num_workers > 1:
        return dataset
    return device_batches((dataset.repeat() if repeat else dataset).as_numpy_iterator(), distribution.strategy)


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
