"""Top-1 on sklearn's digits of each family's Edge-TPU-sized variant: float Keras vs its Edge-TPU form exported all
int8 (sigmoid GELU, every op mapped), and the form's ops mapped and size. Trained from scratch on the 1,437 training
scans upscaled to `--image-size` (ViP fits one grid per segment_dim: it runs at 112 with segment_dim 8, the same
parameters as at 224 with 16).

    python benchmarks/edgetpu_digits.py --epochs 10 --output docs/results/edgetpu_digits.json
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_mixer
from keras_mixer.machine import machine
from keras_mixer.datasets import load_digits
from keras_mixer.export import load_interpreter, predict, to_tflite
from keras_mixer.export.edgetpu import check_edgetpu
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.io_utils import write_text

VARIANTS = ("mixer_edgetpu", "as_mlp_edgetpu", "hire_mlp_edgetpu", "vip_edgetpu", "raft_mlp_edgetpu")


def build(name, size):
    if name == "vip_edgetpu":
        size, options = 112, {"segment_dim": (8,) * 4}
        from keras_mixer.models.vip import VIP_VARIANTS

        return keras_mixer.VisionPermutator(**{**VIP_VARIANTS[name], **options}, input_shape=(size, size, 3),
                                            classes=10, classifier_activation=None), size
    return keras_mixer.create_model(name, input_shape=(size, size, 3), classes=10, classifier_activation=None), size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=VARIANTS)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output", help="a JSON file for the rows, the machine and the command")
    args = parser.parse_args()
    rows = []
    print(f"{'model':<18}{'params':>9}{'size':>6}{'float top-1':>13}{'Edge-TPU int8':>15}{'ops mapped':>12}{'MiB':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            keras.utils.set_random_seed(0)
            model, size = build(name, args.image_size)
            (x_train, y_train), (x_test, y_test) = load_digits(size)
            x_train, x_test = keras_mixer.preprocess_input(x_train), keras_mixer.preprocess_input(x_test)
            model.compile(keras.optimizers.AdamW(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
            float_top1 = np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)
            path = to_tflite(edgetpu_model(model), Path(tmp) / f"{name}.tflite", "int8",
                             representative_data=x_train[:256])
            form_top1 = np.mean(predict(load_interpreter(path), x_test).argmax(1) == y_test)
            _, summary = check_edgetpu(path)
            print(f"{name:<18}{model.count_params() / 1e6:>8.2f}M{size:>6}{float_top1:>13.2%}{form_top1:>15.2%}"
                  f"{summary['edgetpu_ops']:>6}/{summary['ops']:<5}{os.path.getsize(path) / 2**20:>6.1f}", flush=True)
            rows.append({"model": name, "params": model.count_params(), "image_size": size, "epochs": args.epochs,
                         "float_top1": float(float_top1), "form_top1": float(form_top1),
                         "edgetpu_ops": summary["edgetpu_ops"], "ops": summary["ops"],
                         "form_mib": os.path.getsize(path) / 2**20})
    if args.output:
        command = "python benchmarks/edgetpu_digits.py " + " ".join(sys.argv[1:])
        write_text(args.output, json.dumps({"machine": machine(), "command": command, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
