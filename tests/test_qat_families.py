"""Quantization-aware training in every family: `quantize_model` fake-quantizes each family's blocks where the int8
export quantizes, so that a QAT copy deviates from float about as much as its int8 export does; a layer holding a
Dense or a convolution without fake-quant is refused by class."""

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.errors import KerasMixerError
from keras_mixer.export import to_tflite
from keras_mixer.export.interpreter import load_interpreter, predict
from keras_mixer.quantization import quantize_model
from keras_mixer.quantization.qat import float_layers, is_quantized
from small_models import SMALL, with_nonzero_weights

FAMILIES = {**SMALL, "sparse_mlp": lambda: keras_mixer.SparseMLP(4, 16, 3, 8, 32, num_sparse_blocks=2, min_capacity=1,
                                                                 input_shape=(16, 16, 3), classes=5)}


@pytest.mark.parametrize("family", FAMILIES)
def test_qat_copy_deviates_from_float_as_its_int8_export_does(family, tmp_path):
    """mean |QAT - float| / mean |int8 export - float| over the logits (random non-zero head and norms) within
    0.6-2.5: the fake-quant points predict the export. Before the blocks had fake-quant, the hierarchical families
    measured 0.26-0.33 (their input quantizer alone)."""
    keras.utils.set_random_seed(3)
    model = with_nonzero_weights(FAMILIES[family]())
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (32, *model.input_shape[1:])).astype("float32")
    images = rng.uniform(-1, 1, (16, *model.input_shape[1:])).astype("float32")
    reference = model.predict(images, verbose=0)
    qat = quantize_model(model, calibration_data=calibration)
    assert not float_layers(qat)
    simulated = qat.predict(images, verbose=0)
    exported = predict(load_interpreter(to_tflite(model, tmp_path / "int8.tflite", "int8",
                                                  representative_data=calibration, metadata=False)), images)
    ratio = np.abs(simulated - reference).mean() / np.abs(exported - reference).mean()
    print(f"{family}: mean |QAT - float| / mean |int8 - float| = {ratio:.2f}")
    assert 0.6 <= ratio <= 2.5
    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras")  # plain Keras, safe mode
    assert is_quantized(loaded)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), simulated, atol=1e-5)


def test_a_layer_with_a_float_dense_and_no_fake_quant_is_refused_by_class():
    @keras.saving.register_keras_serializable(package="test_qat_families")
    class PlainProjection(keras.layers.Layer):
        def build(self, input_shape):
            self.projection = keras.layers.Dense(input_shape[-1], name="projection")
            self.projection.build(input_shape)

        def call(self, x):
            return self.projection(x)

    images = keras.Input((8, 8, 3))
    model = keras.Model(images, keras.layers.Dense(4, name="head")(PlainProjection(name="plain")(images)))
    with pytest.raises(KerasMixerError, match=r"layer class PlainProjection holds plain/projection .*no fake-quant"):
        quantize_model(model)
