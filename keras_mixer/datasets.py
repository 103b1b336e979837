"""Image sources, the same everywhere (training, QAT, calibration, evaluation, prediction): sklearn's digits
(offline), a folder of class sub-folders, or any tensorflow-datasets image-classification name; and the one
evaluation transform (centre crop, bilinear resize, [-1, 1]) that evaluation, int8 calibration and `predict` share
with the Android app's frames (`keras_mixer.preprocessing.preprocess_frame`)."""

import concurrent.futures
import dataclasses
import difflib
import functools
import io
import os
import reprlib
import warnings

import numpy as np

from keras_mixer.errors import DataError, KerasMixerError, is_number

DIGITS = "digits"
# What a source is evaluated at: the share of the image's short side the centre crop keeps. tfds datasets follow
# the ImageNet convention (timm's crop_pct for the Mixers); digits and the user's own folders keep the whole centred
# square, which is what the Android app feeds the model from a camera frame.
TFDS_CROP_FRACTION = 0.875
FULL_CROP_FRACTION = 1.0
# tf.io.decode_image's formats; a folder's other files (text, .DS_Store, ...) are not images
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# photo formats TensorFlow does not decode: a folder's files in them are left out and named, never passed over
# without a word (a folder of 60 % JPEGs and 40 % WebPs trained on the JPEGs alone)
OTHER_IMAGE_EXTENSIONS = (".webp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".jxl", ".ppm", ".pgm")
# the eval split beside train/, first found first: valid/ is how Roboflow and many Kaggle datasets name it
EVAL_SPLIT_FOLDERS = ("val", "validation", "valid", "test")
AUTOTUNE = -1  # tf.data.AUTOTUNE, without importing TensorFlow at module import
# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS, ~89.5 M): a larger header is refused before decoding,
# which would need gigabytes for one image
MAX_IMAGE_PIXELS = 89_478_485
# a folder whose unreadable share is above this is refused rather than trained or evaluated on what is left
MAX_SKIPPED_SHARE = 0.1
# the EXIF tag of a photo's orientation: phones store the sensor's rows and this tag, which viewers follow. Training
# and prediction follow it too, as the Android app turns camera frames upright: a folder of phone photos trained
# as stored would be sideways to the frames the app feeds
EXIF_ORIENTATION = 0x0112
# {path: why} of every image file this process skipped; the command line says them once at the end
SKIPPED_IMAGES = {}


@dataclasses.dataclass
class ImageSource:
    """Unbatched (image uint8 HxWx3, integer label) examples of one split, before any preprocessing."""

    dataset: object  # tf.data.Dataset
    num_examples: int
    num_classes: int
    class_names: list
    in_memory: bool  # small enough to cache decoded images
    crop_fraction: float = FULL_CROP_FRACTION  # the evaluation crop this source is measured with


def inspect_image(file):
    """(why `file` (a path or the bytes of one) is not an image worth decoding, or None; its EXIF orientation 1-8),
    from one opening of it. Not worth decoding: empty, not an image, over MAX_IMAGE_PIXELS, or damaged after its
    header (its pixel data decoded, a JPEG at 1/8 scale: all of its compressed data read, 5-10x faster than a full
    decode). Orientation 1 (as stored) where the file has no tag or is not an image. Needs Pillow (without it:
    (None, 1))."""
    try:
        from PIL import Image
    except ImportError:
        return None, 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": its orientation reads as stored
            with Image.open(io.BytesIO(file) if isinstance(file, bytes) else file) as image:
                width, height = image.size
                if width * height <= MAX_IMAGE_PIXELS:
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
                    try:
                        image.load()
                    except (OSError, ValueError, SyntaxError) as error:
                        return f"damaged after its header ({error})", 1
                orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError:
        return f"its header declares more than {2 * MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)", 1
    except Image.UnidentifiedImageError:
        empty = file == b"" if isinstance(file, bytes) else os.path.getsize(file) == 0
        return ("an empty file" if empty else "not an image (no format Pillow knows)"), 1
    except (OSError, ValueError, SyntaxError) as error:
        return f"a damaged image header ({type(error).__name__})", 1
    if width * height > MAX_IMAGE_PIXELS:
        return f"{width}x{height} pixels, above the {MAX_IMAGE_PIXELS:,}-pixel limit for one image", 1
    return None, int(orientation) if orientation in range(1, 9) else 1


def upright(image, orientation):
    """[H, W, C] pixels as stored -> as a photo viewer (and PIL's `ImageOps.exif_transpose`) shows them, for the
    EXIF orientation 1-8; a tensor or a NumPy array (an int or a scalar tensor `orientation`)."""
    tf = _tf()

    def transpose(x):
        return tf.transpose(x, (1, 0, 2))

    turns = [lambda x: x, tf.image.flip_left_right, lambda x: tf.image.rot90(x, 2), tf.image.flip_up_down,
             transpose, lambda x: tf.image.rot90(x, 3), lambda x: tf.image.rot90(transpose(x), 2),
             lambda x: tf.image.rot90(x, 1)]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, [functools.partial(turn, image) for turn in turns])


def _format_problem(path):
    """Why the image file `path` is not read (a format TensorFlow does not decode), or None."""
    extension = os.path.splitext(path)[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return None
    return f"a {extension} image: training decodes {', '.join(IMAGE_EXTENSIONS)} only; convert it"


def _readable(files, root):
    """`files` ((path, label) pairs) without those whose header is unreadable, which are recorded in
    SKIPPED_IMAGES as {path: why}, as (path, label, EXIF orientation) triples; DataError when more than
    MAX_SKIPPED_SHARE of them are."""
    def inspect(path):
        problem = _format_problem(path)
        return (problem, 1) if problem else inspect_image(path)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # headers only: the time is in opening files
        found = list(pool.map(inspect, [path for path, _ in files]))
    skipped = tuple((path, why) for (path, _), (why, _) in zip(files, found) if why)
    if len(skipped) > MAX_SKIPPED_SHARE * len(files):
        raise DataError(f"{len(skipped)} of the {len(files)} images in {root} cannot be read (e.g. {skipped[0][0]}: "
                        f"{skipped[0][1]}): more than {MAX_SKIPPED_SHARE:.0%}; fix or remove them")
    SKIPPED_IMAGES.update(skipped)
    return [(path, label, orientation) for (path, label), (why, orientation) in zip(files, found) if not why]


def _tf():
    import tensorflow as tf

    return tf


def load_digits(image_size=32, test_fraction=0.2, seed=0):
    """sklearn's 8x8 handwritten digits (1,797 real scans, shipped with sklearn) as RGB images in [0, 255].

    Each image is upscaled bilinearly to `image_size` x `image_size` and repeated over 3 channels, so it feeds a Mixer
    exactly like a camera frame would. Returns ((x_train, y_train), (x_test, y_test)), a stratified split;
    x is float32 [N, image_size, image_size, 3], y int32 [N].
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
        from sklearn.model_selection import train_test_split
    except ImportError as error:
        raise DataError("the digits dataset needs scikit-learn: the demo extra "
                        "(pip install -e '.[demo]' in a checkout)") from error
    from keras import ops

    digits = sklearn_digits()
    images = digits.images.astype("float32")[..., None] * (255.0 / 16.0)
    images = ops.convert_to_numpy(ops.image.resize(images, image_shape(image_size), interpolation="bilinear"))
    images = np.repeat(np.clip(images, 0.0, 255.0), 3, axis=-1)
    labels = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return (x_train, y_train), (x_test, y_test)


def check_crop_fraction(crop_fraction, error=KerasMixerError):
    """`error` unless `crop_fraction` is None (the default crop) or a number in (0, 1]: a crop of 0 read one pixel,
    one above 1 was clipped to the image, both without a word."""
    if crop_fraction is not None and not (is_number(crop_fraction) and 0 < crop_fraction <= 1):
        raise error(f"crop_fraction must be a number > 0 and <= 1, got {crop_fraction!r}")


def check_dataset(name):
    """DataError unless `name` is a source `load_source` reads. Arrays in memory are described, not printed whole,
    and pointed to the model's own `fit`."""
    if isinstance(name, (str, os.PathLike, ImageSource)):
        return
    arrays = [part for part in (name if isinstance(name, (tuple, list)) else [name]) if isinstance(part, np.ndarray)]
    if arrays:
        what = (f"a {name.dtype} array of shape {name.shape}" if isinstance(name, np.ndarray)
                else f"a {type(name).__name__} of {len(name)} with arrays of shapes {[part.shape for part in arrays]}")
        raise DataError(f"dataset must be 'digits', an image folder or a tfds name, got {what}: for images in memory, "
                        "call the model's own fit (keras_mixer models are plain Keras models), or write them into an "
                        "image folder (one sub-folder per class)")
    if hasattr(name, "element_spec"):  # a tf.data.Dataset: no split, class names or position to resume from
        raise DataError("dataset must be 'digits', an image folder or a tfds name, got a tf.data.Dataset: for your "
                        "own pipeline, call the model's own fit (keras_mixer models are plain Keras models)")
    raise DataError(f"dataset must be 'digits', an image folder or a tfds name, got {reprlib.repr(name)}")


def load_source(name, split="train", data_dir=None, download=False, image_size=32):
    """One split of `name`: "digits" (offline, sklearn), a directory of class sub-folders (or "folder:PATH"), or a
    tensorflow-datasets name ("cifar10", "imagenette", "imagenet2012", ...). `split` is "train" or "eval"; for tfds
    "eval" means the dataset's validation split if it has one, else test; any tfds split string also works.
    `image_size` only matters for digits (they are upscaled from 8x8)."""
    check_dataset(name)
    if isinstance(name, ImageSource):
        return name
    name = os.fspath(name)
    if name == DIGITS:
        return _digits(split, image_size)
    if name.startswith("folder:") or os.path.isdir(name):
        return _folder(name.removeprefix("folder:"), split)
    if os.sep in name or name.startswith("."):
        raise DataError(f"image folder {name!r} does not exist")
    return _tfds(name, split, data_dir, download)


def check_model_classes(model, classes, class_names, source, dataset):
    """DataError unless the model's `classes` outputs (and its `class_names`, where it recorded them) are the
    dataset's: an evaluation of a model on another dataset's classes gives numbers that mean nothing."""
    if classes != source.num_classes:
        raise DataError(f"{model} has {classes} outputs, {dataset} has {source.num_classes} classes: evaluate it on "
                        "the dataset it was trained for")
    if class_names and source.class_names and list(class_names) != list(source.class_names):
        index = next(i for i, (a, b) in enumerate(zip(class_names, source.class_names)) if a != b)
        raise DataError(f"{model} was trained on other classes than {dataset}'s: class {index} is "
                        f"{class_names[index]!r} in the model, {source.class_names[index]!r} in the dataset")


def _digits(split, image_size):
    tf = _tf()
    train, test = load_digits(image_size)
    images, labels = train if split == "train" else test
    dataset = tf.data.Dataset.from_tensor_slices((tf.cast(images.round(), tf.uint8), labels))
    return ImageSource(dataset, len(labels), 10, [str(digit) for digit in range(10)], in_memory=True)


def _hidden(name):
    """Not the user's photos: hidden files and folders (`.thumbnails/`; `._IMG_0042.jpg`, the AppleDouble file macOS
    writes beside every photo copied onto a USB stick or a network share, which is not an image) and `__MACOSX/`,
    where a zip made on a Mac keeps those."""
    return name.startswith(".") or name == "__MACOSX"


def _image_name(name):
    """A file name a folder's images are found by: an image extension TensorFlow decodes or one named as
    unreadable (OTHER_IMAGE_EXTENSIONS), and not hidden."""
    return not _hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS)


def image_files(folder):
    """Every image file (`_image_name`) under `folder`, at any depth, through linked folders too (photos kept
    elsewhere and linked in, as torchvision's ImageFolder reads them), in name order, without hidden folders; a
    folder reached twice (a link to a folder above it) is read once."""
    files, seen = [], {os.path.realpath(folder)}
    for root, folders, names in os.walk(folder, followlinks=True):
        real = {name: os.path.realpath(os.path.join(root, name)) for name in folders}
        folders[:] = [name for name in folders if not _hidden(name) and real[name] not in seen]
        seen.update(real[name] for name in folders)
        files += [os.path.join(root, name) for name in names if _image_name(name)]
    return sorted(files)


def _class_files(path):
    """{class name: sorted image paths} of the sub-folders of `path` that hold images (at any depth below); a
    warning names image files beside them, which belong to no class."""
    classes, loose = {}, []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.is_dir() and not _hidden(entry.name):
            classes[entry.name] = image_files(entry.path)
        elif _image_name(entry.name):
            loose.append(entry.path)
    if loose and classes:  # photos saved into the dataset's folder, to be sorted later: not trained on, said so
        more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
        warnings.warn(f"{path}: image files beside the class folders, in none of them, are not read: "
                      f"{loose[0]}{more}; move each into its class's folder")
    empty = [name for name, files in classes.items() if not files]
    if empty and len(empty) < len(classes):
        raise DataError(f"class folder {os.path.join(path, empty[0])} has no images ({', '.join(IMAGE_EXTENSIONS)});"
                        " remove it or add its images")
    return {name: files for name, files in classes.items() if files}


def _folder(path, split):
    """`path/<class>/*.jpg` (any of IMAGE_EXTENSIONS, any size). If `path` has a train/ sub-folder, it is the
    training split and val/ (or validation/, valid/, test/) the eval split; otherwise a fixed 10 % of each class
    (at least one image, chosen with seed 0) is the eval split. Images keep their own size and aspect ratio: the
    transforms crop and resize them, turned upright by their EXIF orientation (`upright`). Files whose header is
    unreadable (empty, not an image, over MAX_IMAGE_PIXELS) are left out and recorded (SKIPPED_IMAGES); a class
    left with none, or a split with more than MAX_SKIPPED_SHARE of them, is a DataError. Files damaged past their
    header are found by decoding them first (`inspect_image`); one TensorFlow still fails to decode is dropped then
    (evaluations count the images they used)."""
    if not os.path.isdir(path):
        raise DataError(f"image folder {path!r} does not exist")
    root = path
    if os.path.isdir(os.path.join(path, "train")):
        others = sorted(entry.name for entry in os.scandir(path) if entry.is_dir() and not _hidden(entry.name)
                        and entry.name not in ("train", *EVAL_SPLIT_FOLDERS))
        if others:  # a class folder left beside the splits, or a split under another name: not read, said so
            warnings.warn(f"{path}: folders beside train/ and its eval split are not read: "
                          f"{', '.join(name + '/' for name in others[:5])}{' ...' if len(others) > 5 else ''}")
        subsets = ["train"] if split == "train" else [
            s for s in EVAL_SPLIT_FOLDERS if os.path.isdir(os.path.join(path, s))]
        if not subsets:
            raise DataError(f"image folder {path!r} has train/ but no {', '.join(s + '/' for s in EVAL_SPLIT_FOLDERS)}")
        root = os.path.join(path, subsets[0])
        classes = _class_files(root)
        # the class list (and so the label indices) always comes from train/
        names = list(_class_files(os.path.join(path, "train"))) if split != "train" else list(classes)
        files = [(file, names.index(name)) for name, paths in classes.items() if name in names for file in paths]
        unknown = sorted(set(classes) - set(names))
        if unknown:
            raise DataError(f"{root} has classes that train/ lacks: {unknown[:5]}")
    else:
        classes = _class_files(path)
        names = list(classes)
        rng = np.random.RandomState(0)
        files = []
        for index, (name, paths) in enumerate(classes.items()):
            order = rng.permutation(len(paths))
            held_out = max(1, round(len(paths) * 0.1)) if len(paths) > 1 else 0
            chosen = order[:held_out] if split != "train" else order[held_out:]
            files += [(paths[i], index) for i in sorted(chosen)]
    if len(names) < 2:
        # one class's folder given for the dataset, or photos not yet sorted: the images it holds are named
        loose = sum(1 for entry in os.scandir(root) if entry.is_file() and _image_name(entry.name))
        lying = (f": its {loose} images lie directly in it, and a dataset keeps each class's images in a sub-folder "
                 f"named after the class") if loose else ""
        raise DataError(f"image folder {root!r} needs at least two class sub-folders with images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); found {names or 'none'}{lying}")
    if not files:
        raise DataError(f"image folder {root!r} has no {split} images")
    files = _readable(files, root)
    unreadable = sorted(set(range(len(names))) - {label for _, label, _ in files})
    if unreadable and split == "train":
        raise DataError(f"class {names[unreadable[0]]!r} of {root} has no readable images")
    # a fixed shuffled order (seed 0), so that any prefix (e.g. the calibration images) mixes the classes
    files = [files[i] for i in np.random.RandomState(0).permutation(len(files))]
    tf = _tf()
    paths, labels, orientations = (tf.constant(column) for column in zip(*files))

    def decode(file, label, orientation):
        image = tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        return tf.ensure_shape(upright(image, orientation), (None, None, 3)), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels, orientations)).map(decode,
                                                                                    num_parallel_calls=AUTOTUNE)
    dataset = dataset.ignore_errors(log_warning=True)
    return ImageSource(dataset, len(files), len(names), names, in_memory=False)


def _tfds(name, split, data_dir, download):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError("tfds datasets need tensorflow-datasets: the train extra "
                        "(pip install -e '.[train]' in a checkout)") from error
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError):  # ValueError: "cifar-10" fails to parse
        imagenet = name.lower().replace("-", "") in ("imagenet", "imagenet1k", "in1k", "ilsvrc2012")
        near = ["imagenet2012"] if imagenet else difflib.get_close_matches(
            name.lower(), tfds.list_builders(with_community_datasets=False), n=3)
        hint = f"did you mean {' or '.join(near)}?" if near else "e.g. cifar10, imagenette, imagenet2012"
        raise DataError(f"unknown dataset {name!r}: not 'digits', not a folder, and not a tfds dataset "
                        f"({hint})") from None
    features = builder.info.features
    if "image" not in features or "label" not in features or not hasattr(features["label"], "num_classes"):
        raise DataError(f"tfds dataset {name!r} is not image classification (needs 'image' and a 'label' class)")
    if download:
        try:
            builder.download_and_prepare()
        except Exception as error:  # tfds raises anything from its downloaders (network, checksum, manual data)
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise DataError(f"tfds could not download and prepare {name!r} into {builder.data_dir} "
                            f"({type(error).__name__}: {first_line}); with no network, build it elsewhere with "
                            f"`tfds build {name}` and copy it into --data-dir") from error
    split_name = split
    if split in ("train", "eval"):
        available = list(builder.info.splits) or ["train", "validation", "test"]  # mock datasets list no splits
        wanted = ["train"] if split == "train" else ["validation", "test"]
        split_name = next((s for s in wanted if s in available), None)
        if split_name is None:
            raise DataError(f"tfds dataset {name!r} has no {' or '.join(wanted)} split; it has {available}")
    try:
        dataset = builder.as_dataset(split=split_name, as_supervised=True, shuffle_files=split == "train",
                                      read_config=tfds.ReadConfig(shuffle_seed=0))  # same file order every run
    except AssertionError as error:  # tfds raises AssertionError for data that was never downloaded
        raise DataError(f"tfds dataset {name!r} is not in {builder.data_dir}: pass download=True (--download) "
                        f"or build it with `tfds build {name}`") from error
    info = builder.info.splits[split_name] if split_name in builder.info.splits else None
    num_examples = info.num_examples if info else int(dataset.reduce(0, lambda count, _: count + 1))
    label = features["label"]
    return ImageSource(dataset, num_examples, label.num_classes, list(label.names),
                       in_memory=num_examples <= 100_000, crop_fraction=TFDS_CROP_FRACTION)


def ensure_rgb(image):
    tf = _tf()
    image = tf.convert_to_tensor(image)
    if image.shape.rank == 2:
        image = image[..., None]
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def image_shape(image_size):
    """(height, width) of an image size given as one number (a square) or a pair."""
    if isinstance(image_size, (tuple, list)):
        height, width = image_size
        return int(height), int(width)
    return int(image_size), int(image_size)


def model_image_size(model):
    """The image size a model takes from keras_mixer's sources and image files: one number for a square input,
    (height, width) otherwise; None if dynamic. KerasMixerError if it takes anything but RGB images
    (`input_image_size`) or rescales its input itself (`refuse_input_rescaling`)."""
    refuse_input_rescaling(model)
    return input_image_size(model.input_shape, model.name)


def refuse_input_rescaling(model, error=KerasMixerError):
    """`error` if `model` passes its input through a `keras.layers.Rescaling` or `Normalization` first (a Keras
    habit: raw pixels in). keras_mixer feeds every model `preprocess_input`'s [-1, 1] (datasets, image files,
    calibration images) and writes that into a .tflite's metadata: such a model would have its input rescaled twice
    and still train, calibrate and export, wrongly and without a word."""
    import keras

    inputs = {id(tensor) for tensor in model.inputs}
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            try:
                consumed = keras.tree.flatten(layer.input)
            except (AttributeError, ValueError):  # a layer called more than once has no single input
                continue
            if any(id(tensor) in inputs for tensor in consumed):
                raise error(f"{model.name} rescales its input itself (its {type(layer).__name__} layer "
                            f"{layer.name!r}), but keras_mixer feeds a model preprocess_input's [-1, 1] (datasets, "
                            "image files, calibration images) and writes that into a .tflite's metadata: give the "
                            "model without it, taking [-1, 1] (the keras_mixer model inside does)")


def input_image_size(input_shape, model_name):
    """`model_image_size` of an input shape [N, H, W, C]: every dataset, folder and image file reaches a model as
    RGB (grey images are repeated over 3 channels, alpha dropped), so a model of another channel count is refused
    here, naming the size to build it at, rather than failing inside its first layer."""
    input_shape = tuple(None if d is None else int(d) for d in input_shape)
    if len(input_shape) != 4 or input_shape[-1] != 3:
        height, width = input_shape[1:3] if len(input_shape) == 4 else ("H", "W")
        raise KerasMixerError(
            f"{model_name} takes input {input_shape[1:]}; datasets, image folders and image files reach a model as "
            f"RGB images: build it with input_shape=({height}, {width}, 3) (grey images are repeated over the 3 "
            "channels), or feed it your own arrays")
    height, width = input_shape[1:3]
    if height is None or width is None:
        return None
    return height if height == width else (height, width)


def eval_transform(image, image_size, crop_fraction=FULL_CROP_FRACTION):
    """The largest central region of the model's aspect (a square for square models), `crop_fraction` of it,
    resized bilinearly (half-pixel centres, no antialiasing) to `image_size` (a number or (height, width));
    float32 in [0, 255]. At crop_fraction 1 and a square size this is the Android app's camera-frame crop
    (`preprocess_frame`); at 0.875 and 224 it keeps the central 224/256 of the short side, as timm evaluates the
    Mixers."""
    tf = _tf()
    height, width = image_shape(image_size)
    image = tf.cast(ensure_rgb(image), tf.float32)
    shape = tf.shape(image)[:2]
    rows, columns = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # for a square size: the short side, as before (the ratios are exactly 1)
    crop_rows = tf.minimum(rows, columns * (height / width)) * crop_fraction
    crop_columns = tf.minimum(columns, rows * (width / height)) * crop_fraction
    crop_rows = tf.maximum(tf.cast(tf.round(crop_rows), tf.int32), 1)
    crop_columns = tf.maximum(tf.cast(tf.round(crop_columns), tf.int32), 1)
    top, left = (shape[0] - crop_rows) // 2, (shape[1] - crop_columns) // 2
    image = tf.image.resize(image[top : top + crop_rows, left : left + crop_columns], (height, width))
    return tf.clip_by_value(tf.ensure_shape(image, (height, width, 3)), 0.0, 255.0)


def eval_batches(source, image_size, batch_size, crop_fraction=None):
    """One pass over `source` as batches of ([-1, 1] float32 images, integer labels), through `eval_transform`
    (at the source's crop fraction unless given)."""
    tf = _tf()
    crop_fraction = source.crop_fraction if crop_fraction is None else crop_fraction
    dataset = source.dataset.map(
        lambda image, label: (eval_transform(image, image_size, crop_fraction) / 127.5 - 1.0, label),
        num_parallel_calls=AUTOTUNE,
    )
    options = tf.data.Options()
    options.deterministic = True
    return dataset.batch(batch_size).with_options(options).prefetch(AUTOTUNE)


def calibration_images(source, image_size, samples=256, crop_fraction=None, data_dir=None, download=False):
    """`samples` images of the training split of `source` (a name or an ImageSource), preprocessed exactly as for
    evaluation: [N, image_size, image_size, 3] float32 in [-1, 1]. The first `samples` of the split: every source
    is already in a mixed order (tfds shuffles at preparation, folders are read in a fixed shuffled order, digits
    come from a shuffled split), so they mix the classes."""
    source = load_source(source, "train", data_dir, download, image_size)
    subset = dataclasses.replace(source, dataset=source.dataset.take(samples),
                                 num_examples=min(samples, source.num_examples))
    images = [np.asarray(batch) for batch, _ in eval_batches(subset, image_size, 64, crop_fraction)]
    if not images:
        raise DataError("no calibration images could be read")
    return np.concatenate(images)
