"""Classifying images: a `.keras` model, a `.tflite` file or a pretrained registry model, on image files or arrays,
preprocessed exactly as evaluation preprocesses them (`keras_mixer.datasets.eval_transform`)."""

import collections.abc
import dataclasses
import glob
import io
import os
import re

import numpy as np

from keras_mixer.datasets import (FULL_CROP_FRACTION, IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS, TFDS_CROP_FRACTION,
                                  check_crop_fraction, eval_transform, image_files, inspect_image, input_image_size,
                                  model_image_size, upright)
from keras_mixer.errors import DataError, ExportError, KerasMixerError, is_whole_number
from keras_mixer.models.registry import names_a_file, refuse_weights_beside
from keras_mixer.preprocessing import imagenet_class_names


# images read, preprocessed and run per call of the model: memory stays bounded for a folder of any size (all of a
# command line's files were stacked into one batch: 3 GB of pixels for 5,000 photos at 224, and the model's
# activations for all of them at once)
CLASSIFY_BATCH = 32


@dataclasses.dataclass
class Classifier:
    """A model ready to score preprocessed batches: `run([N, size, size, 3] in [-1, 1]) -> [N, classes]`."""

    run: object
    image_size: int | tuple  # a square's side, or (height, width)
    class_names: list
    crop_fraction: float
    probabilities: bool  # the outputs are softmax probabilities (else logits)


def load_image(path):
    """An image file as [H, W, 3] uint8 RGB: TensorFlow's decoder for what training reads from folders (JPEG, PNG,
    GIF, BMP), so a file is classified from the same pixels it was trained on; PIL for anything else it reads
    (WebP, TIFF, ...). Any mode (grey, palette, RGBA: alpha dropped) becomes RGB, turned upright by its EXIF
    orientation as training reads it (a phone's photo as its viewer shows it). DataError names the file."""
    import tensorflow as tf

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from error
    problem, orientation = inspect_image(data)  # before decoding: a decompression bomb would need gigabytes
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        return upright(tf.io.decode_image(data, channels=3, expand_animations=False), orientation).numpy()
    except (tf.errors.InvalidArgumentError, ValueError):
        pass
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError as error:
        raise DataError(f"{path}: not a JPEG, PNG, GIF or BMP image (other formats need Pillow)") from error
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise DataError(f"{path}: not an image file TensorFlow or PIL can read ({type(error).__name__})") from error


def preprocess_image(image, image_size, crop_fraction=FULL_CROP_FRACTION):
    """One [H, W, 3] (or [H, W]) image of pixels in [0, 255] -> [image_size, image_size, 3] float32 in [-1, 1],
    as evaluation preprocesses it."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3)) or not image.size:
        raise DataError(f"an image must be [H, W, 3] or [H, W] pixels, got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise DataError("the image contains NaN or Inf values")
    # pixels on another scale would be classified without a word, and wrongly: already preprocessed ([-1, 1]),
    # scaled to [0, 1], or 16-bit
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        preprocessed = low >= -1 and high <= 1
        hint = ": they look preprocessed already; pass the pixels before preprocess_input" if preprocessed else ""
        raise DataError(f"pixels must be in [0, 255], as an image file holds them; got values in [{low:g}, "
                        f"{high:g}]{hint}")
    if np.issubdtype(image.dtype, np.floating) and high <= 1 and np.any(image != np.round(image)):
        raise DataError(f"pixels look scaled to [0, 1] (largest {high:g}); pass them in [0, 255] (times 255)")
    return np.asarray(eval_transform(image, image_size, crop_fraction), np.float32) / 127.5 - 1.0


def _softmax(scores):
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def release_model_and_info(name, weights):
    """The registry model `name` with its `weights` (`trained_variant`: refused without them), and what `predict`
    and `export` would read from a `.keras` file that `train` wrote: ImageNet's class names where its head has
    ImageNet's classes, and timm's evaluation crop."""
    from keras_mixer.models.registry import trained_variant

    model = trained_variant(name, weights)
    names = imagenet_class_names(model.output_shape[-1])
    return model, {"crop_fraction": TFDS_CROP_FRACTION, **({"class_names": names} if names else {})}


def load_classifier(model, weights=None, crop_fraction=None):
    """A Classifier for `model`: a keras.Model, a `.keras` file (class names and crop recorded by `train`), a
    `.tflite` file (class names and output kind from its metadata; the whole centred square, as the Android app
    crops frames) or a registry name built with `weights` (ImageNet class names from the shipped label files;
    timm's 0.875 crop)."""
    import keras

    from keras_mixer.export import load_interpreter, predict, read_metadata
    from keras_mixer.export.tflite import outputs_probabilities
    from keras_mixer.weights import load_keras_model_with_info

    check_crop_fraction(crop_fraction)
    if not isinstance(model, str) or model.endswith((".tflite", ".keras")):
        refuse_weights_beside(model, weights)
    info = {}
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".tflite"):
        interpreter = load_interpreter(model)
        try:
            metadata = read_metadata(model)
        except ExportError:  # a .tflite from elsewhere: no class names, output kind from the values
            metadata = {"labels": None, "output": None}
        size = input_image_size(interpreter.get_input_details()[0]["shape"], os.fspath(model))
        _require_class_scores(os.fspath(model), interpreter.get_output_details()[0]["shape"])
        return Classifier(lambda x: predict(interpreter, x), size, metadata["labels"],
                          crop_fraction or FULL_CROP_FRACTION,
                          {"probability": True, "logits": False}.get(metadata["output"]))
    if isinstance(model, (str, os.PathLike)) and names_a_file(model):
        model, info = load_keras_model_with_info(model)
    elif isinstance(model, str):
        try:
            model, info = release_model_and_info(model, weights)
        except ValueError as error:
            if not isinstance(error, KerasMixerError):
                message = f"{model!r} is not a .keras/.tflite file or a registry model ({error})"
                raise KerasMixerError(message) from error
            raise
    if not isinstance(model, keras.Model):
        raise KerasMixerError(f"cannot classify with {model!r}: give a keras.Model, a .keras or .tflite file, or a "
                              "registry name")
    size = model_image_size(model)
    _require_class_scores(model.name, model.output_shape, model.layers[-1])
    return Classifier(lambda x: np.asarray(model.predict(x, batch_size=32, verbose=0), np.float32), size,
                      info.get("class_names"), crop_fraction or info.get("crop_fraction", FULL_CROP_FRACTION),
                      outputs_probabilities(model))


def _require_class_scores(name, output_shape, last_layer=None):
    """KerasMixerError unless the model ends in class scores [N, classes]: a backbone (include_top=False) gives a
    token grid or, pooled, a feature vector whose top entries would be printed as classes."""
    import keras

    pooled = isinstance(last_layer, (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
                                     keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D))
    if len(output_shape) != 2 or pooled:
        shape = tuple(None if d is None else int(d) for d in output_shape[1:])
        what = f"pooled features ({last_layer.name})" if pooled else f"a {shape} feature map"
        raise KerasMixerError(f"{name} outputs {what}, not class scores: it has no classification head "
                              "(built with include_top=False?); classify with the model that ends in one")


def classify(model, images, top=5, weights=None, crop_fraction=None):
    """The `top` classes of each image, best first.

    Args:
        model: a keras.Model, a `.keras` or `.tflite` file, or a registry name ("mixer_b16") with `weights`.
        images: image file paths, wildcard patterns ("photos/*.jpg", "photos/**/*.png") or folders (every image
            file under a folder, in name order), [H, W, 3] pixel arrays in [0, 255] (or a [N, H, W, 3] batch), or
            one of them.
        crop_fraction: override the evaluation crop (default: the model's, see `load_classifier`).
    Returns one dict per image: {"image": path or index, "top": [{"label", "index", "score"}, ...]}, scores are
    probabilities (softmax of logits). An unreadable file, a folder without images, a pattern that matches no
    file or a URL gives {"image": path, "error": message} and the others are still classified. Images are read and
    run `CLASSIFY_BATCH` at a time, so a folder of any size fits in memory.
    """
    if not is_whole_number(top) or top < 1:
        raise KerasMixerError(f"top must be an integer >= 1, got {top!r}")
    classifier = model if isinstance(model, Classifier) else load_classifier(model, weights, crop_fraction)
    if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
        images = [images]
    if isinstance(images, (dict, str, bytes)) or not isinstance(images, collections.abc.Iterable):
        raise KerasMixerError(f"images must be image files, folders or pixel arrays, or a list of them; got "
                              f"{type(images).__name__}")
    entries = [entry for image in images for entry in _expanded(image)]
    results = []
    for start in range(0, len(entries), CLASSIFY_BATCH):
        results += _classify_batch(classifier, entries[start : start + CLASSIFY_BATCH], start, top)
    return results


def _expanded(image):
    """(path, path) for each image file under a folder (recursively, in name order) or matched by a wildcard pattern
    that no file is named (`"photos/*.jpg"`: quoted, or from a shell that leaves patterns to the program, as
    Windows' does), or (what, DataError) for a folder without images, a pattern that matches none or a URL;
    (None, image) for anything else (named later: a path by itself, an array by its position)."""
    if not isinstance(image, (str, os.PathLike)):
        return [(None, image)]
    path = os.fspath(image)
    if re.match(r"(https?|ftp)://", path):
        return [(path, DataError(f"{path}: a URL; classify reads image files: download it first (keras.utils."
                                 "get_file, curl -O)"))]
    if not os.path.exists(path) and set(path) & set("*?["):
        matched = sorted(file for file in glob.glob(path, recursive=True) if os.path.isfile(file))
        return [(file, file) for file in matched] or [(path, DataError(f"{path}: matches no file"))]
    if not os.path.isdir(path):
        return [(None, image)]
    return [(file, file) for file in image_files(path)] or [(path, DataError(
        f"{path}: a folder without image files ({', '.join(IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS)})"))]


def _classify_batch(classifier, entries, first_position, top):
    results, batch, slots = [], [], []
    for position, (name, image) in enumerate(entries, first_position):
        if name is None:
            name = os.fspath(image) if isinstance(image, (str, os.PathLike)) else position
        try:
            if isinstance(image, DataError):  # a folder without images, a pattern matching none, a URL
                raise image
            pixels = load_image(name) if isinstance(image, (str, os.PathLike)) else image
            batch.append(preprocess_image(pixels, classifier.image_size, classifier.crop_fraction))
            slots.append(len(results))
            results.append({"image": name})
        except DataError as error:
            results.append({"image": name, "error": str(error)})
    if batch:
        scores = classifier.run(np.stack(batch))
        probabilities = classifier.probabilities
        if probabilities is None:  # unknown output kind: softmax rows are non-negative and sum to 1
            probabilities = bool(np.all(scores >= 0) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-2))
        scores = scores if probabilities else _softmax(scores)
        names = classifier.class_names
        for slot, row in zip(slots, scores):
            best = np.argsort(row)[::-1][:top]
            results[slot]["top"] = [{"label": names[i] if names else str(i), "index": int(i), "score": float(row[i])}
                                    for i in best]
    return results
