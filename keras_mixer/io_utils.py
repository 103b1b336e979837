"""File writing that never leaves a half-written file behind."""

import contextlib
import errno
import os
import sys
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path` (same suffix, so Keras accepts it); renames it onto `path` only if the
    block succeeds, and removes it otherwise. Readers see the old file or the complete new one, never a partial one.
    A failure to write (a directory in the way, permissions, a full disk) is an OSError naming `path`, not the
    temporary file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", str(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(path.suffixes) or ".tmp"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        os.unlink(tmp)  # writers such as Keras and h5py want to create the file themselves
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        if error.filename is None or error.filename in (tmp, str(path.parent)) or str(error.filename).startswith(
                str(path.parent / f".{path.stem}.")):
            raise OSError(error.errno, f"cannot write it ({error.strerror})", str(path)) from error
        raise
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def folder_given_as_model(path, suffixes=(".keras", ".tflite"), what="model file"):
    """What to say of a folder given where a model (or weights) file belongs (a run's folder: `train --output
    runs/float` writes runs/float/model.keras; a Hugging Face Hub snapshot holds model.safetensors): the files of
    that kind inside it, to give instead."""
    inside = sorted(name for name in os.listdir(path) if name.endswith(suffixes))
    held = f"; give one of its files: {', '.join(os.path.join(path, name) for name in inside)}" if inside else \
        f", and holds no {' or '.join(suffixes)} file"
    return f"{path} is a folder, not a {what}{held}"


def output_problem(path, folder=False):
    """Why `path` cannot be written, as the words that follow it (None when it can): a folder where the file
    belongs or a file where the folder does, a file among the folders above it, or the nearest folder above it
    without write permission. Checked before the work that ends in writing it (a conversion, an evaluation, a
    training run), not only when the file is finally written."""
    path = Path(os.path.abspath(path))
    if path.exists() and path.is_dir() != folder:
        return "is a file, not a folder" if folder else "is a folder, not a file"
    above = path if path.is_dir() else path.parent
    while not above.exists():  # the folders that writing creates; the root exists
        above = above.parent
    if not above.is_dir():
        return f"cannot be written: {above} is a file, not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"cannot be written: no permission to write in {above}"
    return None


def require_output_file(path, suffix, what, error):
    """`error` (an exception class) naming `path` unless it ends in `suffix` and can be written: a file the user
    named by mistake, a model.keras given as a report's path, is never replaced by another kind of file, and a
    path that cannot be written is refused before the work. `what` says what is written."""
    if os.path.splitext(os.fspath(path))[1].lower() != suffix:
        raise error(f"{os.fspath(path)}: {what}; name the file *{suffix}")
    if problem := output_problem(path):
        raise error(f"{os.fspath(path)} {problem}")


def require_output_folder(path, error, what="folder"):
    """`error` (an exception class) naming `path` if it cannot be a folder to write in: an `--output` folder named
    by mistake after a file, refused before any work rather than when the first file is written into it."""
    if os.path.isfile(path):
        raise error(f"--output {os.fspath(path)} is a file, not a {what}")
    if problem := output_problem(path, folder=True):
        raise error(f"--output {os.fspath(path)} {problem}")


def write_text(path, text):
    """Atomically writes `text` to `path`."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


@contextlib.contextmanager
def native_stderr_quiet():
    """While TensorFlow's log level hides its C++ info and warning lines (TF_CPP_MIN_LOG_LEVEL >= 1, as the
    `keras-mixer` command sets it), sends what native code writes to file descriptor 2 during the block to
    /dev/null: the TFLite converter prints its quantizer's settings and LiteRT its delegate's INFO line there,
    whatever the log level. Errors still arrive as the exceptions the block raises."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
