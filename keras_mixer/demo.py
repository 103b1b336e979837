"""The offline end-to-end demo on sklearn's digits, on the CPU: train a float Mixer -> quantization-aware
fine-tune -> export float32 and int8 `.tflite` (and a plain post-training int8 export to compare) -> evaluate each
with the LiteRT interpreter -> report (table, JSON, training curves, confusion matrix)."""

import json
from pathlib import Path

import keras
import numpy as np

from keras_mixer.datasets import load_digits
from keras_mixer.errors import KerasMixerError
from keras_mixer.export import evaluate_tflite, plot_confusion_matrix, to_tflite, top_k_accuracy
from keras_mixer.export.edgetpu import check_edgetpu
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.io_utils import require_output_folder, write_text
from keras_mixer.machine import machine
from keras_mixer.models.mlp_mixer import DIGITS_MIXER, build_digits_mixer
from keras_mixer.preprocessing import preprocess_input
from keras_mixer.quantization import quantize_model
from keras_mixer.training.callbacks import plot_history
from keras_mixer.weights import save_model

IMAGE_SIZE = 32
DIGIT_LABELS = [str(digit) for digit in range(10)]
# what the demo writes into its folder, by the name its report gives each
OUTPUT_FILES = {
    "model": "model.keras", "qat_model": "model_qat.keras", "float32": "model_float32.tflite",
    "int8 (QAT)": "model_int8.tflite", "int8 (PTQ)": "model_int8_ptq.tflite",
    "all-int8 (QAT)": "model_int8_integer.tflite", "int8 Edge TPU": "model_int8_edgetpu.tflite",
    "confusion_matrix": "confusion_matrix_int8.png", "training_curves": "training_curves.png", "report": "report.json",
}
DEMO_DATASET = "sklearn digits"  # how every demo report's "dataset" begins, the first version's too


def check_demo_folder(output_dir):
    """KerasMixerError if `output_dir` is a file, or holds a file the demo writes that no earlier demo run wrote
    (a trained model.keras, a report.json of `train`): the demo replaces only its own earlier run."""
    require_output_folder(output_dir, KerasMixerError)
    clashes = [name for name in OUTPUT_FILES.values() if (output_dir / name).exists()]
    if not clashes:
        return
    try:
        earlier_demo = json.loads((output_dir / "report.json").read_text())["dataset"].startswith(DEMO_DATASET)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        earlier_demo = False
    if not earlier_demo:
        raise KerasMixerError(f"--output {output_dir} holds {', '.join(clashes)}, which the demo would replace and "
                              "which no demo run wrote: choose another --output")
def compile_for_training(model, optimizer):
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def train_float(x_train, y_train, epochs, batch_size, learning_rate=2e-3, verbose=1):
    """Trains the digits Mixer (inputs already preprocessed) with AdamW and a warmup + cosine schedule;
    returns (model, history dict)."""
    model = build_digits_mixer(drop_path_rate=0.1)
    steps_per_epoch = -(-int(len(x_train) * 0.9) // batch_size)
    total_steps = max(epochs * steps_per_epoch, 1)
    warmup_steps = min(steps_per_epoch * 2, total_steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup_steps, 1), warmup_target=learning_rate, warmup_steps=warmup_steps
    )
    compile_for_training(model, keras.optimizers.AdamW(schedule, weight_decay=0.05, clipnorm=1.0))
    history = model.fit(
        x_train,
        y_train,
        validation_split=0.1,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )
    return model, history.history


def quantization_aware_finetune(model, x_train, y_train, epochs, batch_size, learning_rate=1e-4, verbose=1):
    """QAT copy of `model` (ranges calibrated on training images), fine-tuned for `epochs` at a low learning rate."""
    qat = quantize_model(model, calibration_data=x_train[:256])
    compile_for_training(qat, keras.optimizers.AdamW(learning_rate, weight_decay=0.05, clipnorm=1.0))
    if epochs:
        qat.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=verbose)
    return qat


def run_demo(output_dir="runs/demo", epochs=30, qat_epochs=5, batch_size=64, seed=0, verbose=1):
    """Runs the whole pipeline and writes under `output_dir`: model.keras, model_qat.keras, model_float32.tflite,
    model_int8.tflite (QAT), model_int8_ptq.tflite (plain post-training quantization, for comparison),
    model_int8_integer.tflite (QAT, every op int8), model_int8_edgetpu.tflite (the Edge-TPU-mappable form),
    training_curves.png, confusion_matrix_int8.png and report.json. Returns the report dict."""
    output_dir = Path(output_dir)
    check_demo_folder(output_dir)
    files = {key: output_dir / name for key, name in OUTPUT_FILES.items()}
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits(IMAGE_SIZE, seed=seed)
    x_train, x_test = preprocess_input(x_train), preprocess_input(x_test)
    calibration = x_train[:256]

    model, history = train_float(x_train, y_train, epochs, batch_size, verbose=verbose)
    float_scores = model.predict(x_test, verbose=0)
    qat = quantization_aware_finetune(model, x_train, y_train, qat_epochs, batch_size, verbose=verbose)
    qat_scores = qat.predict(x_test, verbose=0)

    for key, keras_model in (("model", model), ("qat_model", qat)):
        save_model(keras_model, files[key], class_names=DIGIT_LABELS, crop_fraction=1.0, dataset="digits")
    exports = {  # name: (model, quantization, integer_only: None = to_tflite's default)
        "float32": (model, "float32", None),
        "int8 (QAT)": (qat, "int8", None),
        "int8 (PTQ)": (model, "int8", None),
        # every op int8 (NNAPI, DSPs): what keeping elementwise ops float costs or saves
        "all-int8 (QAT)": (qat, "int8", True),
        # same weights in the Edge-TPU-mappable graph (sigmoid GELU), post-training quantized, every op int8
        "int8 Edge TPU": (edgetpu_model(model), "int8", None),
    }
    results = {
        "keras float": {"top1": top_k_accuracy(float_scores, y_test, 1)},
        "keras QAT": {"top1": top_k_accuracy(qat_scores, y_test, 1),
                      "agreement": float(np.mean(qat_scores.argmax(1) == float_scores.argmax(1)))},
    }
    for name, (source, mode, integer_only) in exports.items():
        path = files[name]
        to_tflite(source, path, mode, representative_data=calibration, labels=DIGIT_LABELS, integer_only=integer_only)
        reference = qat_scores if source is qat else float_scores
        results[name], scores = evaluate_tflite(path, x_test, y_test, reference_scores=reference)
        results[name]["size_kb"] = path.stat().st_size / 1024
        _, edgetpu = check_edgetpu(path)
        results[name]["edgetpu"] = "rejected" if edgetpu["rejected_by"] else f"{edgetpu['edgetpu_ops']}/{edgetpu['ops']}"
        if name == "int8 (QAT)":
            plot_confusion_matrix(y_test, scores.argmax(1), files["confusion_matrix"], "int8 (QAT) TFLite, digits test")
    plot_history(history, files["training_curves"])

    report = {
        "machine": machine(),  # the figures depend on it; docs/results/demo.json is this file
        "command": f"keras-mixer demo --epochs {epochs} --qat-epochs {qat_epochs} --batch-size {batch_size} --seed {seed}",
        "dataset": f"{DEMO_DATASET} {IMAGE_SIZE}x{IMAGE_SIZE}: {len(x_train)} train / {len(x_test)} test",
        "model": {**DIGITS_MIXER, "params": model.count_params()},
        "epochs": epochs,
        "qat_epochs": qat_epochs,
        "float_test_accuracy": results["keras float"]["top1"],
        "int8_test_accuracy": results["int8 (QAT)"]["top1"],
        "results": results,
        "files": {key: str(path) for key, path in files.items() if key != "report"},
    }
    write_text(files["report"], json.dumps(report, indent=2))
    print(format_summary(report))
    return report


def format_summary(report):
    """The demo's result table as text."""
    lines = [
        f"\nDigits Mixer: {report['model']['params']:,} params, {report['epochs']} float epochs + "
        f"{report['qat_epochs']} QAT epochs; {report['dataset']}",
        f"{'model':<15}{'top-1':>8}{'agree*':>9}{'size KB':>10}{'ms/image':>10}{'Edge TPU ops**':>16}",
    ]
    for name, row in report["results"].items():
        agreement = f"{row['agreement']:.1%}" if "agreement" in row else "-"
        size = f"{row['size_kb']:.0f}" if "size_kb" in row else "-"
        latency = f"{row['latency_ms_median']:.3f}" if "latency_ms_median" in row else "-"
        lines.append(f"{name:<15}{row['top1']:>8.2%}{agreement:>9}{size:>10}{latency:>10}{row.get('edgetpu', '-'):>16}")
    lines.append("* argmax agreement with the Keras model it was exported from; latency: LiteRT on this CPU, 1 thread,")
    lines.append("  median, batch 1. ** ops the Edge TPU compiler would map, by its documented rules (keras-mixer edgetpu-check)")
    lines.append(f"saved under {Path(report['files']['model']).parent}/")
    return "\n".join(lines)
