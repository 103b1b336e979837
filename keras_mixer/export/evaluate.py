"""Evaluating exported models: accuracy, agreement with a reference, latency, confusion matrix."""

import time

import numpy as np

from keras_mixer.errors import ExportError
from keras_mixer.export.interpreter import load_interpreter, predict
from keras_mixer.io_utils import atomic_path


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


def evaluate_tflite(path, images, labels, reference_scores=None, num_threads=1):
    """Runs a `.tflite` model over preprocessed `images`; returns top-1/top-5, agreement of its argmax with
    `reference_scores` (e.g. the Keras model's outputs) when given, latency at `num_threads`, and the scores."""
    labels = np.asarray(labels)
    interpreter = load_interpreter(path, num_threads=num_threads)
    scores = predict(interpreter, images)
    if len(scores) != len(labels):
        raise ExportError(f"{len(scores)} predictions for {len(labels)} labels")
    report = {
        "top1": top_k_accuracy(scores, labels, 1),
        "top5": top_k_accuracy(scores, labels, min(5, scores.shape[1])),
        "saturated_outputs": float(np.mean(_saturated(interpreter, scores))),
    }
    if reference_scores is not None:
        report["agreement"] = float(np.mean(np.argmax(scores, 1) == np.argmax(reference_scores, 1)))
    if interpreter.get_input_details()[0]["shape"][0] == 1:
        report["latency_ms_median"], report["latency_ms_p90"] = latency_ms(interpreter, images[0])
    return report, scores


def _saturated(interpreter, scores):
    """Per-image flag: an integer output hit its type's limit (its scale is too small for the logits)."""
    out = interpreter.get_output_details()[0]
    scale, zero_point = out["quantization"]
    if not np.issubdtype(out["dtype"], np.integer) or scale == 0:
        return np.zeros(len(scores), bool)
    info = np.iinfo(out["dtype"])
    q = np.round(scores / scale + zero_point)
    return np.any((q <= info.min) | (q >= info.max), axis=1)


def plot_confusion_matrix(labels, predictions, path, title="confusion matrix"):
    """Writes a PNG confusion matrix (rows: true class, columns: predicted)."""
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
