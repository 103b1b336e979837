"""Callbacks that make a run resumable to the step, and its logs continuous after a kill.

None of them reads a step's results on the main thread. Keras runs the batch-end hooks of `fit` on a callback
thread (JAX and torch, which dispatch steps ahead of the device) only when every callback's batch-end hook is
Keras' default or the callback is `async_safe`; one other hook, such as `keras.callbacks.TerminateOnNaN`'s, makes
the main thread wait for every step's loss before it dispatches the next step, and the device idles meanwhile."""

import csv
import hashlib
import io
import json
import math
import os
import signal
import threading
from pathlib import Path

import keras

from keras_mixer.errors import TrainingError
from keras_mixer.io_utils import atomic_path, write_text
from keras_mixer.weights import nonfinite_variables


def architecture_fingerprint(model):
    """A short hash of the model's variables (names and shapes, in order; not their paths, which carry the
    auto-numbered layer names of the session): two models that share a backup must agree on it."""
    layout = [f"{v.name}:{tuple(v.shape)}" for v in model.weights]
    return hashlib.sha256("\n".join(layout).encode()).hexdigest()[:16]


def optimizer_step(model):
    """How many batches the model's optimizer has applied (restored with the weights)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class InterruptBetweenSteps(keras.callbacks.Callback):
    """Ctrl-C during `fit` stops the run between two steps: used as a context manager around `fit` and passed to it
    as a callback, the next batch's start or the epoch's end raises KeyboardInterrupt from plain Python (on the
    main thread: a batch's end may run on Keras' callback thread).

    Python raises KeyboardInterrupt at whatever bytecode the main thread is running when SIGINT arrives (the signal
    module's "Note on Signal Handlers and Exceptions"): inside a finalizer (a `__del__` run as an object is freed) it
    is printed and dropped, and the run trains on to its last step. So within the block SIGINT only marks the run,
    and a backup being written is finished; a second Ctrl-C raises at once, wherever the run is. A handler the
    caller installed (or SIGINT ignored, as in a shell's background job), or a thread other than the main one, is
    left as it was."""

    def __init__(self):
        super().__init__()
        self.interrupted = False
        self._previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._mark)
        return self

    def __exit__(self, *exception):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _mark(self, signum, frame):
        self._raise_if_interrupted()  # the second Ctrl-C: now
        self.interrupted = True

    def _raise_if_interrupted(self, *args, **kwargs):
        if self.interrupted:
            raise KeyboardInterrupt

    on_train_batch_begin = on_test_batch_begin = on_epoch_end = _raise_if_interrupted


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` after a step whose loss is NaN or Inf, as `keras.callbacks.TerminateOnNaN` does, without
    holding the next step back for the loss: it is `async_safe`, so Keras hands it each step's loss on its callback
    thread, where it only notes the step, and the main thread stops the run at the next batch's start after that,
    at the latest at the checkpoint interval's end (JAX may have dispatched the whole interval by the time the
    first loss is read: Keras' own pace without callbacks). The steps run past the bad one are lost anyway: the
    trainer refuses the non-finite weights, and the backup keeps its last finite ones."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.nonfinite_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.nonfinite_step is None and loss is not None and not math.isfinite(loss):
            self.nonfinite_step = batch

    def _stop_if_nonfinite(self, *args, **kwargs):
        if self.nonfinite_step is not None:
            self.model.stop_training = True

    on_train_batch_begin = on_epoch_end = _stop_if_nonfinite


class IntervalTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` writing once per checkpoint interval (a fit "epoch", its default update
    frequency) without a batch-end hook. At that frequency Keras' hook writes no scalars; it writes a TensorFlow
    train_function's graph on the first batch, which this callback leaves out, so that it does not make the main
    thread wait for every step (see the module's docstring). The model's own graph (its Keras config) is still
    written."""

    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


class BestValidationWeights(keras.callbacks.Callback):
    """Puts back, when training ends, the weights (and fake-quant ranges) of the interval with the best validation
    top-1, counting the weights training started from as measured at `initial_top1`: a run whose last intervals
    got worse does not return or save them. After a resume, the candidates are the restored weights and the
    intervals run since (the best of the killed session's intervals is not kept on disk)."""

    def __init__(self, initial_top1, monitor="val_accuracy"):
        super().__init__()
        self.monitor = monitor
        self.best_top1 = initial_top1
        self.best_step = None
        self.best_weights = None

    def on_train_begin(self, logs=None):
        self.best_weights, self.best_step = self.model.get_weights(), optimizer_step(self.model)

    def on_epoch_end(self, epoch, logs=None):
        top1 = (logs or {}).get(self.monitor)
        if top1 is not None and top1 > self.best_top1:
            self.best_top1, self.best_step = float(top1), optimizer_step(self.model)
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs=None):
        self.model.set_weights(self.best_weights)


class ResumableBackup(keras.callbacks.Callback):
    """Backs up a step-based run at the end of each fit "epoch" (one checkpoint interval of optimizer steps over a
    repeated data stream), exact after a kill at any moment: `restore(model)` before `fit` loads the last backup
    and returns the step it reached, from which the caller resumes the data stream and `fit`'s `initial_epoch`.

    The files are those of `keras.callbacks.BackupAndRestore` (`latest.weights.h5`, `training_metadata.json`), so
    backups of runs interrupted under earlier versions resume. Keras' callback writes the weights file in place and
    the epoch to a separate JSON file, so a kill between or during the two writes leaves them disagreeing or
    corrupt. Here the weights (model + optimizer state, including `iterations`) are written to a temporary file and
    renamed, and the step is read back from the restored `optimizer.iterations` itself: one source of truth. The
    JSON file records the model's architecture, so that another model's run is not resumed from this backup. It
    has no batch-end hook, so it is `async_safe` (see the module's docstring)."""

    async_safe = True

    def __init__(self, backup_dir, seed=0):
        super().__init__()
        self.backup_dir = backup_dir
        self.weights_path = os.path.join(backup_dir, "latest.weights.h5")
        self.metadata_path = os.path.join(backup_dir, "training_metadata.json")
        self.seed = seed

    def restore(self, model):
        """Loads the latest backup into `model` (compiled) if there is one; returns the optimizer step reached."""
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        if os.path.exists(self.weights_path):
            recorded = {}
            if os.path.exists(self.metadata_path):
                recorded = json.loads(Path(self.metadata_path).read_text())
            if recorded.get("architecture", architecture_fingerprint(model)) != architecture_fingerprint(model):
                raise TrainingError(f"the backup in {self.backup_dir} was written by a different model (another "
                                    f"architecture or a float/QAT mismatch): give this run its own output folder, "
                                    f"or delete that backup to start over")
            try:
                model.load_weights(self.weights_path)
            except ValueError as error:  # e.g. a backup written before fingerprints were recorded
                raise TrainingError(f"cannot resume from {self.weights_path}: it does not fit this model "
                                    f"({str(error).splitlines()[0]}); give this run its own output folder, or "
                                    f"delete that backup to start over") from error
        return optimizer_step(model)

    def on_epoch_begin(self, epoch, logs=None):
        """Re-seeds the model's random layers (dropout, stochastic depth) from (seed, interval): Keras does not
        save SeedGenerator states with the weights, so this is what makes a resumed interval draw the same
        masks as an uninterrupted run."""
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for index, state in enumerate(states):
            value = (self.seed * 1_000_003 + index * 7_919 + epoch * 104_729) % 2**31
            state.assign(keras.ops.cast([value, 0], state.dtype))

    def on_epoch_end(self, epoch, logs=None):
        if nonfinite_variables(self.model):  # a diverged run keeps its last good backup
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic_path(self.weights_path) as tmp:
            self.model.save_weights(tmp)
        # informational but for the architecture: the step is restored from the weights file
        write_text(self.metadata_path, json.dumps({"epoch": epoch + 1, "step": optimizer_step(self.model),
                                                   "architecture": architecture_fingerprint(self.model)}))


class ResumableCSVLogger(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` appending across restarts without duplicates or gaps: before a run resumed at
    `first_epoch` opens the file, the rows of that epoch and later (written before the kill, but after the last
    backup) and a torn last line are dropped, so the file holds exactly one row per completed epoch."""

    def __init__(self, filename, first_epoch=0, separator=","):
        super().__init__(filename, separator=separator, append=True)
        self.metrics_path, self.first_epoch, self.separator = filename, first_epoch, separator

    def on_train_begin(self, logs=None):
        drop_rows_from(self.metrics_path, self.first_epoch, self.separator)
        super().on_train_begin(logs)


def drop_rows_from(csv_path, first_epoch, separator=","):
    """Rewrites the metrics CSV without its rows of `first_epoch` and later and without a torn last line."""
    if not os.path.exists(csv_path):
        return
    with open(csv_path, newline="", encoding="utf-8") as file:
        text = file.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # torn by the kill
    rows = list(csv.reader(io.StringIO("".join(lines)), delimiter=separator))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    kept = [row for row in body if len(row) == len(header) and row[0].isdigit() and int(row[0]) < first_epoch]
    if len(kept) == len(body) and "".join(lines) == text:
        return
    out = io.StringIO()
    csv.writer(out, delimiter=separator, lineterminator="\n").writerows([header] + kept)
    write_text(csv_path, out.getvalue())


def read_history(csv_path):
    """The metrics CSV as {column: [values per epoch]} (floats), like `History.history`."""
    with open(csv_path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {}) if key != "epoch"}


def plot_history(history, path, x_label="epoch", x_values=None):
    """Writes a PNG with train (and validation) loss and accuracy curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        if key not in history:
            continue
        xs = x_values if x_values is not None else range(1, len(history[key]) + 1)
        ax.plot(xs, history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(xs, history[f"val_{key}"], label="validation")
        ax.set_xlabel(x_label)
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
