"""Training input pipelines (tf.data, on any Keras backend) over the sources of `keras_mixer.datasets`: train
preprocessing (random-resized crop, flip, RandAugment, mixup/cutmix) and the shared eval preprocessing, both ending
in [-1, 1] images and one-hot labels."""

from keras_mixer.datasets import AUTOTUNE, DIGITS, ImageSource, ensure_rgb, eval_transform, image_shape, load_source
from keras_mixer.training.augment import batch_mixer, randaugment

RANDAUGMENT_STREAM = 1  # folded into an example's seed: RandAugment's draws are independent of its crop's and flip's

__all__ = ["DIGITS", "ImageSource", "crop_fraction_for", "eval_transform", "load_source", "make_pipeline",
           "train_transform"]


def _tf():
    import tensorflow as tf

    return tf

def train_transform(image, image_size, inception_crop, random_flip, seed=None, crop_fraction=1.0):
    """Random-resized crop (8-100 % of the area, aspect 3/4-4/3, the Inception crop), or else the evaluation crop
    (`eval_transform` at `crop_fraction`, so that training sees what evaluation sees), then an optional
    horizontal flip; float32 in [0, 255]."""
    tf = _tf()
    if inception_crop:
        image = ensure_rgb(image)
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=0.08, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
            max_attempts=10, use_image_if_no_bounding_boxes=True,
        )
        image = tf.image.resize(tf.cast(tf.slice(image, begin, size), tf.float32), image_shape(image_size))
        image = tf.ensure_shape(image, (*image_shape(image_size), 3))  # the crop's size is dynamic, channels too
    else:
        image = eval_transform(image, image_size, crop_fraction)
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1] if seed is not None else None)
    return tf.clip_by_value(image, 0.0, 255.0)


def crop_fraction_for(recipe, source):
    """The recipe's evaluation crop if it sets one, else the source's (`keras_mixer.datasets`)."""
    fraction = getattr(recipe, "eval_crop_fraction", None)
    return source.crop_fraction if fraction is None else fraction


def make_pipeline(source, image_size, batch_size, recipe=None, training=False, seed=0, deterministic=None,
                  cache=None, shuffle_buffer=10_000, skip_batches=0, pixels=False):
    """Batches of ([-1, 1] float32 images, one-hot float32 labels) from `source`; `pixels=True`: uint8 images in
    [0, 255] instead, for a model that scales them on the device (`keras_mixer.training.feed.with_pixel_input`).

    training=True: shuffled (seeded), repeated forever, random crop/flip and RandAugment per example, mixup/cutmix
    per batch, as the `recipe` says (`keras_mixer.training.augment`), full batches only; every random draw is a
    pure function of (seed, position), so with `deterministic=True` the stream replays exactly and `skip_batches`
    resumes it where an interrupted run stopped (by default a training stream lets its parallel map finish examples
    out of order, which is faster; each example keeps its own draws). training=False: one pass through
    `keras_mixer.datasets.eval_transform` at `recipe.eval_crop_fraction`, or the source's own crop fraction.
    `batch_size` is the global batch: under a tf.distribute strategy Keras splits it over the replicas.
    """
    tf = _tf()
    crop_fraction = crop_fraction_for(recipe, source)
    dataset = source.dataset
    if cache if cache is not None else source.in_memory:
        dataset = dataset.cache()
    if training:
        # The stream is a pure function of (seed, position), whichever iterator reads it. A shuffled dataset
        # reshuffles for every new iterator over the same object (and Keras opens an extra one under
        # tf.distribute); built inside flat_map, the shuffle is created afresh, so every iterator replays the same
        # passes, each pass in its own order. Each example carries the stateless seed of its position.
        buffer = min(shuffle_buffer, source.num_examples)
        passes = tf.data.Dataset.range(1).flat_map(lambda _: dataset.shuffle(buffer, seed=seed).repeat())
        positions = tf.data.Dataset.counter().map(lambda index: tf.stack([tf.cast(seed, tf.int64), index]))
        dataset = tf.data.Dataset.zip((passes, positions))

        def transform(example, example_seed):
            image = train_transform(example[0], image_size, recipe.inception_crop, recipe.random_flip, example_seed,
                                    crop_fraction)
            if recipe.randaugment:  # per example, in parallel: a batch-level layer ran ~10x slower than timm
                num_ops, magnitude = recipe.randaugment
                image = randaugment(image, num_ops, magnitude,
                                    tf.random.experimental.stateless_fold_in(example_seed, RANDAUGMENT_STREAM))
            return image, example[1]

        dataset = dataset.map(transform, num_parallel_calls=AUTOTUNE).batch(batch_size, drop_remainder=True)
    else:
        dataset = dataset.map(lambda image, label: (eval_transform(image, image_size, crop_fraction), label),
                              num_parallel_calls=AUTOTUNE)
        dataset = dataset.batch(batch_size)
    classes = source.num_classes

    def finish(images, labels):
        if pixels:  # rounded as a decoder rounds: a mixed image moves by at most half a pixel level
            return tf.cast(tf.round(images), tf.uint8), labels
        return images / 127.5 - 1.0, labels

    def one_hot(images, labels):
        return images, tf.one_hot(tf.cast(labels, tf.int32), classes)

    mixer = batch_mixer(recipe.mixup_alpha, recipe.cutmix_alpha, seed) if training else None
    if mixer is None:
        dataset = dataset.map(lambda images, labels: finish(*one_hot(images, labels)), num_parallel_calls=AUTOTUNE)
    else:  # seeded by the batch's index, before skip_batches: a resumed stream mixes alike
        dataset = dataset.map(one_hot, num_parallel_calls=AUTOTUNE).enumerate().map(
            lambda index, batch: finish(*mixer(*batch, index)), num_parallel_calls=AUTOTUNE)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    options = tf.data.Options()
    options.deterministic = bool(deterministic) if deterministic is not None else not training
    # in-memory arrays cannot be sharded by file: split the data, not the files, across workers
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA if source.in_memory else tf.data.experimental.AutoShardPolicy.AUTO
    )
    return dataset.with_options(options).prefetch(AUTOTUNE)
