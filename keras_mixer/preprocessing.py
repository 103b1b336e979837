"""Input scaling and ImageNet label decoding for Mixer models (no downloads: the label files ship in the package)."""

import functools
import gzip
import importlib.resources

import numpy as np
from keras import ops

from keras_mixer.errors import KerasMixerError

# head size -> shipped label file (synset \t lemmas), derived by scripts/make_labels.py
LABEL_FILES = {1000: "imagenet1k_labels.tsv.gz", 21843: "imagenet21k_labels.tsv.gz"}


def preprocess_input(x):
    """Scales pixel values in [0, 255] to [-1, 1] (`x / 127.5 - 1`), the official Mixer input range.

    Accepts NumPy arrays (returned as float32 NumPy) and backend tensors (returned as tensors).
    """
    if isinstance(x, (np.ndarray, list, tuple, int, float)):
        return np.asarray(x, dtype=np.float32) / 127.5 - 1.0
    return ops.cast(x, "float32") / 127.5 - 1.0


@functools.lru_cache(maxsize=None)
def imagenet_labels(num_classes=1000):
    """(synset, name) pairs of the 1,000-class or 21,843-class ImageNet heads, in class-index order."""
    if num_classes not in LABEL_FILES:
        raise KerasMixerError(
            f"no ImageNet label file for a {num_classes}-class head; shipped: {sorted(LABEL_FILES)} classes"
        )
    data = importlib.resources.files("keras_mixer") / "data" / LABEL_FILES[num_classes]
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").splitlines()
    return tuple(tuple(line.split("\t", 1)) for line in lines)


def decode_predictions(preds, top=5):
    """Like `keras.applications.imagenet_utils.decode_predictions`: for each row of `preds`, the `top` classes as
    (synset, name, score), best first. Works for the 1k and the 21,843-class ImageNet-21k heads; `name` is the
    first WordNet lemma of the class."""
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise KerasMixerError(f"decode_predictions expects a [batch, classes] array, got shape {preds.shape}")
    labels = imagenet_labels(preds.shape[1])
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(labels[i][0], labels[i][1].split(",")[0], float(row[i])) for i in best])
    return results
