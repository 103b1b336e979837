"""Fetching released checkpoint files: the Keras cache with hash checks, or a local directory when offline."""

import hashlib
import os
from pathlib import Path

import keras

from keras_mixer.errors import WeightsError

WEIGHTS_DIR_ENV = "KERAS_MIXER_WEIGHTS_DIR"
CACHE_SUBDIR = "keras_mixer"


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_hash(path, expected):
    """Checks a full sha256 or, as torch.hub does for timm's file names, a leading prefix of it."""
    if expected and not sha256_of(path).startswith(expected.lower()):
        raise WeightsError(f"{path}: sha256 does not match the published hash {expected}; the file is corrupt or not the release")


def fetch(filename, url, file_hash=None, weights_dir=None, cache_dir=None):
    """Local path of a released file: taken from `weights_dir` (or $KERAS_MIXER_WEIGHTS_DIR) when it is there,
    otherwise downloaded into the Keras cache (`~/.keras/keras_mixer/`) and hash-checked.

    A full 64-hex sha256 is checked by `keras.utils.get_file`, which also re-downloads a corrupt cache entry;
    a shorter prefix is checked here, and a mismatching cached file is deleted so the next call fetches it again.
    """
    weights_dir = weights_dir or os.environ.get(WEIGHTS_DIR_ENV)
    if weights_dir:
        local = Path(weights_dir) / filename
        if local.is_file():
            verify_hash(local, file_hash)
            return str(local)
    full_hash = file_hash if file_hash and len(file_hash) == 64 else None
    if cache_dir:  # get_file silently falls back to /tmp/.keras when the folder does not exist yet
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    for attempt in range(2):  # a cached file that fails the prefix check is deleted and fetched once more
        try:
            path = keras.utils.get_file(
                filename, url, file_hash=full_hash, hash_algorithm="sha256", cache_subdir=CACHE_SUBDIR,
                cache_dir=cache_dir,
            )
        except Exception as error:  # get_file raises bare Exception subclasses for every network failure
            where = Path(weights_dir) if weights_dir else f"a folder named by ${WEIGHTS_DIR_ENV}"
            raise WeightsError(
                f"could not download {url} ({type(error).__name__}: {error}). Offline? Put {filename} into {where} "
                f"(or into {Path(cache_dir or Path.home() / '.keras') / CACHE_SUBDIR})"
            ) from error
        try:
            verify_hash(path, file_hash)
            return path
        except WeightsError:
            os.unlink(path)
            if attempt:
                raise
