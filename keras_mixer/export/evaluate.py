"""Evaluating exported models: accuracy, agreement with a reference, latency, confusion matrix."""

import os
import time

import numpy as np

from keras_mixer.errors import ExportError
from keras_mixer.export.interpreter import load_interpreter, predict
from keras_mixer.io_utils import atomic_path, require_output_file


def top_k_accuracy(scores, labels, k):
    top = np.argsort(scores, axis=1)[:, ::-1][:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def latency_ms(interpreter, image, runs=50, warmup=5):
    """Median and p90 wall time of one `invoke` (input already set), warm-up excluded."""
    from keras_mixer.export.interpreter import quantize

    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], quantize(np.asarray(image, np.float32)[None], inp))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times)), float(np.percentile(times, 90))


def evaluate_tflite(path, images, labels=None, reference_scores=None, num_threads=1, reference_model=None,
                    crop_fraction=None):
    """Runs a `.tflite` model over preprocessed `images` with `labels` (class indices or one-hot), over `images` as
    an iterable of (images, labels) batches (e.g. `keras_mixer.datasets.eval_batches`; then `labels` is None), or
    over the eval split of a dataset named as `images` ("digits", an image folder, a prepared tfds name: as
    `to_tflite`'s representative_data takes one; `dataset_eval_batches`). Returns (report, scores): top-1/top-5,
    the share of images with an integer output at its limit, `examples`, the agreement of its argmax with
    `reference_scores` or with `reference_model`'s outputs on the same images, and the latency of one `invoke` at
    `num_threads` (batch-1 models)."""
    from keras_mixer.datasets import check_crop_fraction

    check_crop_fraction(crop_fraction, ExportError)
    interpreter = load_interpreter(path, num_threads=num_threads)
    if reference_model is not None:
        check_reference_model(reference_model, interpreter, f"reference_model {reference_model.name!r}", path)
    if isinstance(images, (str, os.PathLike)):  # iterated, a name was a string of characters, each refused
        if labels is not None:
            raise ExportError(f"labels come with the dataset {os.fspath(images)!r}: give them with arrays only")
        _, images = dataset_eval_batches(path, interpreter, os.fspath(images), crop_fraction=crop_fraction)
    elif crop_fraction is not None:
        raise ExportError("crop_fraction applies to a dataset named as images; arrays are evaluated as given")
    if labels is None and isinstance(images, np.ndarray):
        raise ExportError("evaluate_tflite needs labels with an array of images (or an iterable of (images, "
                          "labels) batches as images)")
    batches = [(images, labels)] if labels is not None else images
    scores, all_labels, references, first_image = [], [], [], None
    for batch in batches:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            shape = f" of shape {np.shape(batch)}" if hasattr(batch, "shape") else ""
            raise ExportError(f"without labels, images must be an iterable of (images, labels) batches; an element "
                              f"is {type(batch).__name__}{shape} (an array of images takes its labels beside it: "
                              "evaluate_tflite(path, images, labels))")
        batch_images = np.asarray(batch[0])
        batch_labels = batch[1]
        scores.append(predict(interpreter, batch_images))
        all_labels.append(np.asarray(batch_labels))
        if reference_model is not None:
            references.append(np.asarray(reference_model.predict(batch_images, verbose=0), np.float32))
        if first_image is None and len(batch_images):
            first_image = batch_images[0]
    if not scores:
        raise ExportError("no images to evaluate")
    scores, labels = np.concatenate(scores), np.concatenate(all_labels)
    if reference_model is not None:
        reference_scores = np.concatenate(references)
    if len(scores) != len(labels):
        raise ExportError(f"{len(scores)} predictions for {len(labels)} labels")
    labels = class_indices(labels, scores.shape[1])
    report = {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, min(5, scores.shape[1])),
        "examples": int(len(labels)),
        "saturated_outputs": float(np.mean(_saturated(interpreter, scores))),
    }
    if reference_scores is not None:
        reference_scores = np.asarray(reference_scores)
        if reference_scores.shape != scores.shape or not np.all(np.isfinite(reference_scores)):
            what = "holds NaN or infinite values" if reference_scores.shape == scores.shape else (
                f"has shape {reference_scores.shape}")
            raise ExportError(f"reference_scores {what}; the model's scores are {scores.shape} "
                              "(one finite row per image)")
        report["agreement"] = float(np.mean(np.argmax(scores, 1) == np.argmax(reference_scores, 1)))
    if interpreter.get_input_details()[0]["shape"][0] == 1:
        report["latency_ms_median"], report["latency_ms_p90"] = latency_ms(interpreter, first_image)
    return report, scores


def dataset_eval_batches(path, interpreter, dataset, data_dir=None, download=False, crop_fraction=None):
    """(source, batches): the eval split of `dataset` (a name or an image folder) as (images, labels) batches for
    the `.tflite` model at `path`, at its input size and preprocessed as evaluation preprocesses (the dataset's
    crop unless given), after its classes are checked against the model's outputs and the class names its
    metadata holds."""
    from keras_mixer.datasets import check_model_classes, eval_batches, input_image_size, load_source
    from keras_mixer.export.metadata import read_metadata

    classes = int(interpreter.get_output_details()[0]["shape"][-1])
    try:
        label_names = read_metadata(path)["labels"]
    except ExportError:  # a .tflite without our metadata: no names to compare
        label_names = None
    image_size = input_image_size(interpreter.get_input_details()[0]["shape"], path)
    source = load_source(dataset, "eval", data_dir, download, image_size)
    check_model_classes(path, classes, label_names, source, dataset)
    return source, eval_batches(source, image_size, 64, crop_fraction)


def check_reference_model(reference_model, interpreter, what, path):
    """ExportError unless `reference_model` takes the images the `.tflite` file at `path` takes and gives as many
    scores: an agreement with another model's argmax would be a number without meaning."""
    input_shape = tuple(int(d) for d in interpreter.get_input_details()[0]["shape"][1:])
    classes = int(interpreter.get_output_details()[0]["shape"][-1])
    takes, gives = tuple(reference_model.input_shape[1:]), reference_model.output_shape[-1]
    if takes != input_shape or gives != classes:
        raise ExportError(f"{what} takes {takes} and gives {gives} classes; {path} takes {input_shape} and gives "
                          f"{classes}: compare a .tflite with the model it was exported from")


def class_indices(labels, classes):
    """`labels` as class indices [N]: given so, or one-hot [N, classes] (as Keras' categorical losses take them).
    Labels outside the model's classes are refused: they would count as wrong without a word."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == classes:
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)):
        raise ExportError(f"labels must be class indices [N] or one-hot [N, {classes}], got {labels.dtype} of shape "
                          f"{labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise ExportError(f"labels run from {labels.min():g} to {labels.max():g}; the model has {classes} classes "
                          f"(0 to {classes - 1})")
    return labels.astype(np.int64)


def _saturated(interpreter, scores):
    """Per-image flag: an integer output hit its type's limit (its scale is too small for the logits). An output
    with the quantization TFLite gives SOFTMAX and LOGISTIC (scale 1/256 from 0: [0, 1)) holds probabilities,
    which sit at its limits by design (a probability of 0 is the int8 minimum): never flagged."""
    out = interpreter.get_output_details()[0]
    scale, zero_point = out["quantization"]
    if not np.issubdtype(out["dtype"], np.integer) or scale == 0:
        return np.zeros(len(scores), bool)
    info = np.iinfo(out["dtype"])
    if np.isclose(scale, 1 / 256, rtol=1e-6, atol=0) and zero_point == info.min:
        return np.zeros(len(scores), bool)
    q = np.round(scores / scale + zero_point)
    return np.any((q <= info.min) | (q >= info.max), axis=1)


def check_png_path(path):
    """ExportError unless `path` names a `.png` file: a confusion matrix written as `model.keras` replaced the model."""
    require_output_file(path, ".png", "the confusion matrix is a PNG image", ExportError)


def plot_confusion_matrix(labels, predictions, path, title="confusion matrix"):
    """Writes a PNG confusion matrix (rows: true class, columns: predicted) to `path`, which ends in `.png`."""
    check_png_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = int(max(np.max(labels), np.max(predictions))) + 1
    matrix = np.zeros((classes, classes), int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, count, ha="center", va="center", fontsize=7,
                    color="white" if count > matrix.max() / 2 else "black")
    if classes <= 30:  # every class labelled while the labels still fit
        ax.set_xticks(range(classes))
        ax.set_yticks(range(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
