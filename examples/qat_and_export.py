"""Quantization-aware fine-tuning of a trained Mixer, then int8 TFLite export for phones and the Edge TPU.

    python examples/qat_and_export.py --model runs/demo/model.keras --qat-epochs 5 --output runs/export

Uses the offline digits data; swap `load_digits` for your own (preprocessed with keras_mixer.preprocess_input).
"""

import argparse
from pathlib import Path

import keras

import keras_mixer
from keras_mixer.datasets import load_digits
from keras_mixer.errors import KerasMixerError
from keras_mixer.export import evaluate_tflite, to_tflite
from keras_mixer.export.edgetpu import check_edgetpu, format_report
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.quantization import quantize_model
from keras_mixer.weights import load_keras_model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/demo/model.keras", help="a trained float Mixer (.keras)")
    parser.add_argument("--output", default="runs/export")
    parser.add_argument("--qat-epochs", type=int, default=5)
    args = parser.parse_args()
    try:
        model = load_keras_model(args.model)  # a missing or damaged file: one line naming it, not a traceback
    except KerasMixerError as error:
        parser.exit(2, f"{parser.prog}: error: --model {error}\n")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    size = model.input_shape[1]
    (x_train, y_train), (x_test, y_test) = load_digits(size)
    x_train, x_test = keras_mixer.preprocess_input(x_train), keras_mixer.preprocess_input(x_test)

    # 1. QAT: same architecture with fake-quant; ranges calibrated, then a short low-lr fine-tune.
    qat = quantize_model(model, calibration_data=x_train[:256])
    qat.compile(keras.optimizers.AdamW(1e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    qat.fit(x_train, y_train, epochs=args.qat_epochs, batch_size=64)
    qat.save(out / "model_qat.keras")

    # 2. Phones: int8 matmuls with int8 input/output (or float_io=True to keep float32 I/O); the elementwise ops,
    #    LayerNorm statistics and GELU stay float32, which LiteRT's CPU delegate runs fastest (integer_only=True
    #    quantizes them too).
    phone = to_tflite(qat, out / "model_int8.tflite", "int8", representative_data=x_train[:256])
    report, _ = evaluate_tflite(phone, x_test, y_test, reference_scores=qat.predict(x_test, verbose=0))
    print("int8:", report)

    # 3. Edge TPU: the mappable graph form of the same weights, post-training quantized (every op: to_tflite knows
    #    this graph is for the Edge TPU), then checked.
    coral = to_tflite(edgetpu_model(model), out / "model_int8_edgetpu.tflite", "int8", representative_data=x_train[:256])
    rows, summary = check_edgetpu(coral)
    print(format_report(rows, summary).splitlines()[-1])
    print(f"next: bash deploy/compile_edgetpu.sh {coral}")


if __name__ == "__main__":
    main()
