"""Training and export checks on sklearn's digits, shared by the model-family tests."""

import keras
import numpy as np
import pytest

from families import outputs
import keras_mixer
from keras_mixer.datasets import load_digits
from keras_mixer.export import load_interpreter, predict, to_tflite
from keras_mixer.export.edgetpu_model import edgetpu_model


def fit_on_digits(model, epochs=4):
    """Trains `model` (32x32x3 input, 10 logits) on digits; returns (history, x_train, x_test, y_test), the
    images preprocessed."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits(32)
    x_train, x_test = keras_mixer.preprocess_input(x_train), keras_mixer.preprocess_input(x_test)
    model.compile(keras.optimizers.AdamW(2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0).history
    return history, x_train, x_test, y_test


def tflite_agreement(model, x_train, x_test, mode, path):
    """Argmax agreement of the model's `mode` TFLite export with Keras on `x_test`."""
    exported = to_tflite(model, path, mode, representative_data=x_train[:128])
    agreement = np.mean(predict(load_interpreter(exported), x_test).argmax(1) == outputs(model, x_test).argmax(1))
    print(f"{model.name} {mode} TFLite argmax agreement with Keras: {agreement:.2%}")
    return agreement


def check_training_and_round_trip(model, history, x_test, path):
    """The loss fell by 30 % or more, and a `.keras` round trip reproduces the predictions."""
    assert history["loss"][-1] < history["loss"][0] * 0.7, history["loss"]
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(outputs(restored, x_test[:8]), outputs(model, x_test[:8]), atol=1e-5)


def digits_family_tests(build):
    """The digits checks every model family gets, for a module to bind at top level:

        (trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
         test_edgetpu_form_keeps_top1) = digits_family_tests(
            lambda: SomeModel(..., input_shape=(32, 32, 3), classes=10, classifier_activation=None))

    `trained` is a module-scoped fixture (model, history, x_train, x_test, y_test) other tests can use too."""

    @pytest.fixture(scope="module")
    def trained():
        model = build()
        return (model, *fit_on_digits(model))

    def test_trains_on_digits_and_round_trips(trained, tmp_path):
        model, history, _, x_test, _ = trained
        check_training_and_round_trip(model, history, x_test, tmp_path / "m.keras")

    @pytest.mark.parametrize("mode, minimum", [("float32", 0.99), ("int8", 0.95)])
    def test_tflite_export_agrees_with_keras(trained, tmp_path, mode, minimum):
        model, _, x_train, x_test, _ = trained
        assert tflite_agreement(model, x_train, x_test, mode, tmp_path / f"{mode}.tflite") >= minimum

    def test_edgetpu_form_keeps_top1(trained, tmp_path):
        """The Edge-TPU form (sigmoid GELU, every op int8; Sparse-MLP's experts on the CPU) within 2 points of the
        float model's top-1."""
        model, _, x_train, x_test, y_test = trained
        path = to_tflite(edgetpu_model(model, experts_on_cpu=True), tmp_path / "edgetpu.tflite", "int8",
                         representative_data=x_train[:128])
        float_top1 = np.mean(outputs(model, x_test).argmax(1) == y_test)
        edgetpu_top1 = np.mean(predict(load_interpreter(path), x_test).argmax(1) == y_test)
        print(f"{model.name} digits top-1: float {float_top1:.2%}, Edge-TPU int8 form {edgetpu_top1:.2%}")
        assert edgetpu_top1 >= float_top1 - 0.02

    return (trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
            test_edgetpu_form_keeps_top1)
