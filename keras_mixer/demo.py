"""The offline end-to-end demo: a small Mixer trained on sklearn's digits on the CPU, saved with its curves."""

import json
from pathlib import Path

import keras

from keras_mixer.datasets import load_digits
from keras_mixer.io_utils import atomic_path, write_text
from keras_mixer.models import MLPMixer
from keras_mixer.preprocessing import preprocess_input

IMAGE_SIZE = 32
# A Mixer small enough to train in seconds on 2 CPU cores: 8x8 patches of 4x4 pixels -> 64 tokens.
DIGITS_MIXER = dict(patch_size=4, hidden_dim=64, num_blocks=4, tokens_mlp_dim=32, channels_mlp_dim=128)


def build_digits_mixer(**kwargs):
    """The demo's Mixer: 32x32x3 input, 10 classes, logits out."""
    return MLPMixer(
        **DIGITS_MIXER,
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        classes=10,
        classifier_activation=None,
        name="mixer_digits",
        **kwargs,
    )


def train_float(x_train, y_train, epochs, batch_size, learning_rate=2e-3, verbose=1):
    """Trains the digits Mixer with AdamW and a warmup + cosine schedule; returns (model, history dict)."""
    model = build_digits_mixer(drop_path_rate=0.1)
    steps_per_epoch = -(-int(len(x_train) * 0.9) // batch_size)
    total_steps = max(epochs * steps_per_epoch, 1)
    warmup_steps = min(steps_per_epoch * 2, total_steps // 2)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(total_steps - warmup_steps, 1), warmup_target=learning_rate, warmup_steps=warmup_steps
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.05, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        preprocess_input(x_train),
        y_train,
        validation_split=0.1,
        epochs=epochs,
        batch_size=batch_size,
        verbose=verbose,
    )
    return model, history.history


def plot_history(history, path):
    """Writes a PNG with train/validation loss and accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", loss_ax), ("accuracy", acc_ax)):
        ax.plot(history[key], label="train")
        if f"val_{key}" in history:
            ax.plot(history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_demo(output_dir="runs/demo", epochs=30, batch_size=64, seed=0, verbose=1):
    """Trains the digits Mixer and writes model.keras, training_curves.png and report.json under `output_dir`.

    Returns the report dict (test accuracy and file paths).
    """
    output_dir = Path(output_dir)
    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits(IMAGE_SIZE, seed=seed)
    model, history = train_float(x_train, y_train, epochs, batch_size, verbose=verbose)
    _, test_accuracy = model.evaluate(preprocess_input(x_test), y_test, verbose=0)

    model_path = output_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    curves_path = output_dir / "training_curves.png"
    plot_history(history, curves_path)
    report = {
        "dataset": f"sklearn digits {IMAGE_SIZE}x{IMAGE_SIZE}: {len(x_train)} train / {len(x_test)} test",
        "model": {**DIGITS_MIXER, "params": model.count_params()},
        "epochs": epochs,
        "float_test_accuracy": float(test_accuracy),
        "files": {"model": str(model_path), "training_curves": str(curves_path)},
    }
    write_text(output_dir / "report.json", json.dumps(report, indent=2))
    print(f"\nDigits Mixer ({report['model']['params']:,} params, {epochs} epochs)")
    print(f"  test accuracy: {test_accuracy:.2%}")
    print(f"  saved: {model_path}, {curves_path}, {output_dir / 'report.json'}")
    return report
