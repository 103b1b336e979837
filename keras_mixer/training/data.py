"""Input pipelines (tf.data, on any Keras backend): sklearn's digits offline, any tensorflow-datasets image
classification dataset by name, or a folder of images; train preprocessing (random-resized crop, flip, RandAugment,
mixup/cutmix) and eval preprocessing (resize + central crop), both ending in [-1, 1] images and one-hot labels."""

import dataclasses
import os

import keras

from keras_mixer.errors import TrainingError

AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import
DIGITS = "digits"


@dataclasses.dataclass
class ImageSource:
    """Unbatched (image uint8 HxWx3, integer label) examples of one split, before any preprocessing."""

    dataset: object  # tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: list
    in_memory: bool  # small enough to cache decoded images


def _tf():
    import tensorflow as tf

    return tf


def load_source(name, split="train", data_dir=None, download=False, image_size=32):
    """One split of `name`: "digits" (offline, sklearn), a directory of class sub-folders (or "folder:PATH"), or a
    tensorflow-datasets name ("cifar10", "imagenette", "imagenet2012", ...). `split` is "train" or "eval"; for tfds
    "eval" means the dataset's validation split if it has one, else test; any tfds split string also works."""
    if name == DIGITS:
        return _digits(split, image_size)
    if name.startswith("folder:") or os.path.isdir(name):
        return _folder(name.removeprefix("folder:"), split)
    return _tfds(name, split, data_dir, download)


def _digits(split, image_size):
    from keras_mixer.datasets import load_digits

    tf = _tf()
    train, test = load_digits(image_size)
    images, labels = train if split == "train" else test
    dataset = tf.data.Dataset.from_tensor_slices((tf.cast(images.round(), tf.uint8), labels))
    return ImageSource(dataset, len(labels), 10, [str(digit) for digit in range(10)], in_memory=True)


def _folder(path, split):
    """`path/<class>/*.jpg`; if `path` has train/ and val/ (or validation/, test/) sub-folders, those are the
    splits; otherwise a fixed 10 % of the images (seed 0) is the eval split."""
    if not os.path.isdir(path):
        raise TrainingError(f"image folder {path!r} does not exist")
    subsets = {"train": ["train"], "eval": ["val", "validation", "test"]}[split if split == "train" else "eval"]
    for subset in subsets:
        if os.path.isdir(os.path.join(path, subset)):
            dataset = keras.utils.image_dataset_from_directory(
                os.path.join(path, subset), batch_size=None, shuffle=False, image_size=(256, 256)
            )
            break
    else:
        dataset = keras.utils.image_dataset_from_directory(
            path, batch_size=None, shuffle=True, seed=0, validation_split=0.1,
            subset="training" if split == "train" else "validation", image_size=(256, 256),
        )
    names = list(dataset.class_names)
    tf = _tf()
    dataset = dataset.map(lambda image, label: (tf.cast(tf.round(image), tf.uint8), label))
    return ImageSource(dataset, int(dataset.cardinality()), len(names), names, in_memory=False)


def _tfds(name, split, data_dir, download):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise TrainingError("tfds datasets need tensorflow-datasets: pip install 'keras-mixer[train]'") from error
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise TrainingError(f"unknown dataset {name!r}: not 'digits', not a folder, and not a tfds dataset "
                            f"(e.g. cifar10, imagenette, imagenet2012)") from error
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "num_classes"):
        raise TrainingError(f"tfds dataset {name!r} is not image classification (needs 'image' and a 'label' class)")
    if download:
        builder.download_and_prepare()
    split_name = split
    if split in ("train", "eval"):
        available = list(builder.info.splits) or ["train", "validation", "test"]  # mock datasets list no splits
        wanted = ["train"] if split == "train" else ["validation", "test"]
        split_name = next((s for s in wanted if s in available), None)
        if split_name is None:
            raise TrainingError(f"tfds dataset {name!r} has no {' or '.join(wanted)} split; it has {available}")
    try:
        dataset = builder.as_dataset(split=split_name, as_supervised=True, shuffle_files=split == "train",
                                      read_config=tfds.ReadConfig(shuffle_seed=0))  # same file order every run
    except AssertionError as error:  # tfds raises AssertionError for data that was never downloaded
        raise TrainingError(f"tfds dataset {name!r} is not in {builder.data_dir}: pass download=True (--download) "
                            f"or build it with `tfds build {name}`") from error
    info = builder.info.splits[split_name] if split_name in builder.info.splits else None
    num_examples = info.num_examples if info else int(dataset.reduce(0, lambda count, _: count + 1))
    label = features["label"]
    return ImageSource(dataset, num_examples, label.num_classes, list(label.names), in_memory=num_examples <= 100_000)


def _ensure_rgb(image):
    tf = _tf()
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def train_transform(image, image_size, inception_crop, random_flip, seed=None):
    """Random-resized crop (8-100 % of the area, aspect 3/4-4/3, the Inception crop) or a plain resize, then an
    optional horizontal flip; float32 in [0, 255]."""
    tf = _tf()
    image = _ensure_rgb(image)
    if inception_crop:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
            min_object_covered=0.08, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
            max_attempts=10, use_image_if_no_bounding_boxes=True,
        )
        image = tf.slice(image, begin, size)
    image = tf.image.resize(tf.cast(image, tf.float32), (image_size, image_size))
    image = tf.ensure_shape(image, (image_size, image_size, 3))  # the crop's size is dynamic, channels included
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seed[::-1] if seed is not None else None)
    return tf.clip_by_value(image, 0.0, 255.0)


def eval_transform(image, image_size, crop_fraction=0.875):
    """Resize the short side to image_size / crop_fraction (256 for 224 at 0.875), crop the centre
    image_size x image_size; float32 in [0, 255]."""
    tf = _tf()
    image = tf.cast(_ensure_rgb(image), tf.float32)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = image_size / crop_fraction / tf.reduce_min(shape)
    resized = tf.cast(tf.round(shape * scale), tf.int32)
    resized = tf.maximum(resized, image_size)
    image = tf.image.resize(image, resized)
    top = (resized[0] - image_size) // 2
    left = (resized[1] - image_size) // 2
    image = image[top:top + image_size, left:left + image_size]
    return tf.clip_by_value(tf.ensure_shape(image, (image_size, image_size, 3)), 0.0, 255.0)


def batch_mixer(recipe, seed):
    """Batch-level mixup and/or cutmix (Keras' MixUp / CutMix layers) on one-hot labels; with both, each batch
    gets one of them with probability 1/2, as timm does. None when the recipe mixes nothing."""
    mixers = []
    if recipe.mixup_alpha:
        mixers.append(keras.layers.MixUp(alpha=recipe.mixup_alpha, seed=seed))
    if recipe.cutmix_alpha:
        mixers.append(keras.layers.CutMix(factor=recipe.cutmix_alpha, seed=seed))
    if not mixers:
        return None
    tf = _tf()

    def mix(images, labels):
        data = {"images": images, "labels": labels}
        if len(mixers) == 1:
            out = mixers[0](data)
        else:
            out = tf.cond(tf.random.uniform(()) < 0.5, lambda: mixers[0](data), lambda: mixers[1](data))
        return out["images"], out["labels"]

    return mix


def make_pipeline(source, image_size, batch_size, recipe=None, training=False, seed=0, deterministic=None,
                  cache=None, shuffle_buffer=10_000, skip_batches=0):
    """Batches of ([-1, 1] float32 images, one-hot float32 labels) from `source`.

    training=True: shuffled (seeded), repeated forever, random crop/flip, RandAugment and mixup/cutmix as the
    `recipe` says, full batches only; the order, crops and flips are a pure function of (seed, position), so
    `skip_batches` resumes the stream exactly where an interrupted run stopped (RandAugment and mixup/cutmix
    draw from Keras seed generators and are reproducible only from the start). training=False: one pass, resize + central crop (`recipe.eval_crop_fraction`, default 0.875).
    `batch_size` is the global batch: under a tf.distribute strategy Keras splits it over the replicas.
    """
    tf = _tf()
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
        dataset = dataset.map(
            lambda example, example_seed: (
                train_transform(example[0], image_size, recipe.inception_crop, recipe.random_flip, example_seed),
                example[1],
            ),
            num_parallel_calls=AUTOTUNE,
        )
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if recipe.randaugment:
            num_ops, magnitude = recipe.randaugment
            augment = keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops,
                                               factor=min(magnitude / 10.0, 1.0), seed=seed)
            dataset = dataset.map(lambda images, labels: (augment(images), labels), num_parallel_calls=AUTOTUNE)
    else:
        crop_fraction = recipe.eval_crop_fraction if recipe is not None else 0.875
        dataset = dataset.map(lambda image, label: (eval_transform(image, image_size, crop_fraction), label),
                              num_parallel_calls=AUTOTUNE)
        dataset = dataset.batch(batch_size)
    classes = source.num_classes
    dataset = dataset.map(
        lambda images, labels: (images / 127.5 - 1.0, tf.one_hot(tf.cast(labels, tf.int32), classes)),
        num_parallel_calls=AUTOTUNE,
    )
    mixer = batch_mixer(recipe, seed) if training else None
    if mixer is not None:
        dataset = dataset.map(mixer, num_parallel_calls=AUTOTUNE)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    options = tf.data.Options()
    options.deterministic = bool(deterministic) if deterministic is not None else not training
    # in-memory arrays cannot be sharded by file: split the data, not the files, across workers
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA if source.in_memory else tf.data.experimental.AutoShardPolicy.AUTO
    )
    return dataset.with_options(options).prefetch(AUTOTUNE)
