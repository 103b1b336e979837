"""int8 on a model with outlier channels: the digits Mixer trained here, as it is and given outlier channels the
way pretrained checkpoints carry them after their LayerNorms (tests/outliers.py: factors 100, 60, 30, 10 in each
block's LayerNorm_1 and the pre-head norm, compensated in the next Dense, so the float function is the same),
exported in each int8 form without and with channel equalization and with each calibration method. Prints a
markdown table of logit SQNR against the float model and argmax agreement with it on the 360 test scans, and the
strength sweep of equalization (docs/export.md).

    python benchmarks/int8_outliers.py --epochs 15 --sweep --output docs/results/int8_outliers.json
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_mixer
from keras_mixer.machine import machine
from keras_mixer.datasets import load_digits
from keras_mixer.demo import train_float
from keras_mixer.export import load_interpreter, predict, to_tflite
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.export.equalize import equalize_channels
from keras_mixer.io_utils import write_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from outliers import inject_outliers, sqnr_db  # noqa: E402  (the tests' function-preserving injection)

FORMS = {"default int8": {}, "integer-only": {"integer_only": True}, "Edge TPU form": {}}
SETTINGS = {  # name: to_tflite options
    "min/max ranges, no equalization": {"equalize": False, "calibration_method": "minmax"},
    "min/max ranges, equalization": {"calibration_method": "minmax"},
    "percentile ranges, no equalization": {"equalize": False},
    "percentile ranges, equalization (default)": {},
    "mse ranges, equalization": {"calibration_method": "mse"},
}


def export_scores(model, form, options, calibration, images, path):
    source = edgetpu_model(model) if form == "Edge TPU form" else model
    to_tflite(source, path, "int8", representative_data=calibration, metadata=False, **FORMS[form], **options)
    return predict(load_interpreter(path, verify=False), images)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--sweep", action="store_true", help="also sweep the equalization strength")
    parser.add_argument("--output", help="a JSON file for the results, the machine and the command")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits(32)
    x_train, x_test = keras_mixer.preprocess_input(x_train), keras_mixer.preprocess_input(x_test)
    model, _ = train_float(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    reference = model.predict(x_test, verbose=0)
    models = {"as trained": model, "with outlier channels": inject_outliers(model)[0]}
    float_top1 = float(np.mean(reference.argmax(1) == y_test))
    print(f"float top-1 {float_top1:.2%}; injected model's largest logit difference "
          f"{np.abs(models['with outlier channels'].predict(x_test, verbose=0) - reference).max():.2g}")
    rows, results, sweep = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for model_name, source in models.items():
            for setting, options in SETTINGS.items():
                cells = []
                for form in FORMS:
                    scores = export_scores(source, form, options, x_train[:256], x_test, Path(scratch) / "m.tflite")
                    agreement = np.mean(scores.argmax(1) == reference.argmax(1))
                    cells.append(f"{sqnr_db(reference, scores):.1f} dB / {agreement:.1%}")
                    results.append({"model": model_name, "export": setting, "form": form,
                                    "sqnr_db": float(sqnr_db(reference, scores)), "argmax_agreement": float(agreement)})
                rows.append(f"| {model_name} | {setting} | " + " | ".join(cells) + " |")
        print("\n| model | export | " + " | ".join(FORMS) + " |\n|---|---|" + "---|" * len(FORMS))
        print("\n".join(rows))
        if args.sweep:
            print("\n| strength | default int8 | Edge TPU form |\n|---|---|---|")
            for strength in (0.0, 0.25, 0.5, 0.75, 1.0):
                equalized, _ = equalize_channels(models["with outlier channels"], x_train[:256], strength)
                options = {"equalize": False, "calibration_method": "minmax"}  # the strength's effect alone
                path = Path(scratch) / "m.tflite"
                values = [float(sqnr_db(reference, export_scores(equalized, form, options, x_train[:256], x_test, path)))
                          for form in ("default int8", "Edge TPU form")]
                sweep.append({"strength": strength, "sqnr_db": dict(zip(("default int8", "Edge TPU form"), values))})
                print(f"| {strength} | " + " | ".join(f"{value:.1f} dB" for value in values) + " |")
    if args.output:
        command = "python benchmarks/int8_outliers.py " + " ".join(sys.argv[1:])
        write_text(args.output, json.dumps({"machine": machine(), "command": command, "float_top1": float_top1,
                                            "rows": results, "sweep": sweep}, indent=2) + "\n")


if __name__ == "__main__":
    main()
