"""Input scaling and ImageNet label decoding for Mixer models (no downloads: the label files ship in the package)."""

import functools
import gzip
import importlib.resources

import numpy as np
from keras import ops

from keras_mixer.errors import KerasMixerError, is_whole_number

# head size -> shipped label file (synset \t lemmas), derived by scripts/make_labels.py
LABEL_FILES = {1000: "imagenet1k_labels.tsv.gz", 21843: "imagenet21k_labels.tsv.gz"}


# how far beyond [-1, 1] preprocessed images may reach: a bicubic or Lanczos resize before the scaling overshoots
PREPROCESSED_BOUND = 1.5


def preprocessed_images_problem(images, image_shape=None):
    """What shows that `images` are not a batch of `preprocess_input`'s output for a model taking `image_shape`
    (H, W, C, or the shape of whatever else a model takes; None: any side), or None: not an [N, H, W, C] array, no
    images, another image shape (channels first?), NaN or infinite values, or pixels on another scale ("holds uint8
    pixels", "holds values in [0, 255]").
    Calibrating on any of them would set int8 ranges wrong without a word (on unscaled pixels ~100x too wide, on
    NaN meaningless)."""
    try:
        array = np.asarray(images)
    except ValueError:  # NumPy refuses to stack a ragged list
        return "holds images of different shapes"
    if array.dtype == object:
        return f"is a {type(images).__name__}, not an array of images"
    images = array
    expected_shape = tuple(image_shape) if image_shape is not None else ("H", "W", "C")
    if images.ndim != 1 + len(expected_shape):
        sides = ", ".join(str(side or "?") for side in expected_shape)
        return f"must be a batch [N, {sides}], got shape {images.shape}"
    if not len(images):
        return "holds no images"
    if image_shape is not None and any(side not in (None, given) for side, given in zip(image_shape, images.shape[1:])):
        expected, got = ("x".join(str(side or "?") for side in shape) for shape in (image_shape, images.shape[1:]))
        hint = " (channels first? the models take channels last)" if images.shape[1] == image_shape[-1] else ""
        return f"holds {got} images, the model takes {expected}{hint}"
    if not np.issubdtype(images.dtype, np.floating):
        return f"holds {images.dtype} pixels"
    finite = np.isfinite(images)
    if not finite.all():
        return f"holds {images.size - np.count_nonzero(finite):,} NaN or infinite values"
    low, high = float(images.min()), float(images.max())
    if max(-low, high) > PREPROCESSED_BOUND:
        return f"holds values in [{low:g}, {high:g}]"
    return None


def preprocess_input(x, data_format=None):
    """Scales pixel values in [0, 255] to [-1, 1] (`x / 127.5 - 1`): the one input every keras_mixer model takes,
    whatever normalization its checkpoint was trained on (that one is applied inside the model).

    Accepts NumPy arrays (returned as float32 NumPy) and backend tensors (returned as tensors). `data_format`
    ("channels_last", "channels_first" or None) is accepted as in keras.applications; the scaling is the same
    for every channel, so it changes nothing.
    """
    if data_format not in (None, "channels_last", "channels_first"):
        raise KerasMixerError(f"data_format must be None, 'channels_last' or 'channels_first', got {data_format!r}")
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return np.asarray(x, dtype=np.float32) / 127.5 - 1.0
    return ops.cast(x, "float32") / 127.5 - 1.0


@functools.lru_cache(maxsize=None)
def imagenet_labels(num_classes=1000):
    """(synset, name) pairs of the 1,000-class or 21,843-class ImageNet heads, in class-index order."""
    shipped = " or ".join(map(str, sorted(LABEL_FILES)))
    if not is_whole_number(num_classes):
        raise KerasMixerError(f"num_classes must be a whole number ({shipped}), got {num_classes!r}")
    if num_classes not in LABEL_FILES:
        raise KerasMixerError(f"no ImageNet label file for a {num_classes}-class head; shipped: {shipped} classes")
    data = importlib.resources.files("keras_mixer") / "data" / LABEL_FILES[num_classes]
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").splitlines()
    return tuple(tuple(line.split("\t", 1)) for line in lines)


def imagenet_class_names(classes):
    """Each class's first name ('tench'), for a head of ImageNet's 1000 or 21,843 classes; None for other heads."""
    return [name.split(",")[0] for _, name in imagenet_labels(classes)] if classes in LABEL_FILES else None


def decode_predictions(preds, top=5):
    """Like `keras.applications.imagenet_utils.decode_predictions`: for each row of `preds`, the `top` classes as
    (synset, name, score), best first. Works for the 1k and the 21,843-class ImageNet-21k heads; `name` is the
    first WordNet lemma of the class with spaces as underscores, as Keras writes it ('African_elephant')."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise KerasMixerError(f"decode_predictions expects a [batch, classes] array, got shape {preds.shape}")
    # a negative top listed all classes but |top| (Keras' slicing); NaN rows were ranked as if they were scores
    if not is_whole_number(top) or top < 0:
        raise KerasMixerError(f"top must be a whole number >= 0, got {top!r}")
    if not np.issubdtype(preds.dtype, np.number) or not np.all(np.isfinite(preds)):
        raise KerasMixerError("decode_predictions: the predictions hold NaN or infinite values (or are not numbers)")
    labels = imagenet_labels(preds.shape[1])
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(labels[i][0], labels[i][1].split(",")[0].strip().replace(" ", "_"), float(row[i]))
                        for i in best])
    return results


# --- camera frames ---------------------------------------------------------------------------------------------
# The on-device contract, ported operation for operation to android_demo/core (FramePreprocessor.java): every
# step is float32 arithmetic in a fixed order (no fused multiply-add), so the Java port reproduces these numbers
# bit for bit (tests/test_android_core.py).


def argb_to_rgb(argb):
    """[H, W] int ARGB pixels (Android's Bitmap.getPixels) -> [H, W, 3] uint8 RGB."""
    argb = np.asarray(argb).astype(np.int64) & 0xFFFFFFFF
    return np.stack([(argb >> 16) & 0xFF, (argb >> 8) & 0xFF, argb & 0xFF], axis=-1).astype(np.uint8)


def _source_coordinates(out_size, in_size, offset):
    """Half-pixel-centre bilinear sampling (as tf.image.resize): low index, high index, weight of the high one."""
    ratio = np.float32(in_size) / np.float32(out_size)
    position = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * ratio - np.float32(0.5)
    position = np.maximum(position, np.float32(0.0))
    low = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    return low + offset, high + offset, (position - low.astype(np.float32)).astype(np.float32)


def center_crop_resize(rgb, size):
    """The largest centred square of an [H, W, 3] image, resized bilinearly to [size, size, 3] float32 (0..255)."""
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    side = min(height, width)
    y0, y1, wy = _source_coordinates(size, side, (height - side) // 2)
    x0, x1, wx = _source_coordinates(size, side, (width - side) // 2)
    pixels = rgb.astype(np.float32)
    wx, wy = wx[None, :, None], wy[:, None, None]
    one = np.float32(1.0)
    top = pixels[y0][:, x0] * (one - wx) + pixels[y0][:, x1] * wx
    bottom = pixels[y1][:, x0] * (one - wx) + pixels[y1][:, x1] * wx
    return (top * (one - wy) + bottom * wy).astype(np.float32)


def round_half_away_from_zero(x):
    """TFLite's rounding for quantization (std::round), in float32."""
    x = np.asarray(x, np.float32)
    return np.copysign(np.floor(np.abs(x) + np.float32(0.5)), x)


def quantize_values(x, scale, zero_point, dtype):
    """Float values -> integer `dtype` as TFLite quantizes: round(x / scale) + zero_point, clamped, in float32."""
    info = np.iinfo(dtype)
    q = round_half_away_from_zero(np.asarray(x, np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def preprocess_frame(argb, size, scale=0.0, zero_point=0, dtype="float32"):
    """An Android camera frame (ARGB ints, [H, W]) -> the model's input tensor [size, size, 3]: centre crop,
    bilinear resize, `preprocess_input`'s [-1, 1], then quantization with the input's scale / zero point for
    integer models."""
    x = center_crop_resize(argb_to_rgb(argb), size) / np.float32(127.5) - np.float32(1.0)
    if np.dtype(dtype) == np.float32:
        return x.astype(np.float32)
    return quantize_values(x, scale, zero_point, dtype)
