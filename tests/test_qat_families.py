"""Quantization-aware training in every family: `quantize_model` fake-quantizes each family's blocks where the int8
export quantizes, so that a QAT copy deviates from float about as much as its int8 export does; a layer holding a
Dense or a convolution without fake-quant is refused by class."""

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.errors import KerasMixerError
from keras_mixer.export import to_tflite
from keras_mixer.export.edgetpu_model import edgetpu_model
from keras_mixer.export.interpreter import load_interpreter, predict
from keras_mixer.quantization import quantize_model
from keras_mixer.quantization.qat import float_layers, is_quantized
from families import SMALL, outputs, with_nonzero_weights


@pytest.mark.parametrize("family", SMALL)
def test_qat_copy_deviates_from_float_as_its_int8_export_does(family, tmp_path):
    """mean |QAT - float| / mean |int8 export - float| over the logits (random non-zero head and norms) within
    0.6-2.5: the fake-quant points predict the export. Before the blocks had fake-quant, the hierarchical families
    measured 0.26-0.33 (their input quantizer alone)."""
    keras.utils.set_random_seed(3)
    model = with_nonzero_weights(SMALL[family]())
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (32, *model.input_shape[1:])).astype("float32")
    images = rng.uniform(-1, 1, (16, *model.input_shape[1:])).astype("float32")
    reference = outputs(model, images)
    qat = quantize_model(model, calibration_data=calibration)
    assert not float_layers(qat)
    simulated = outputs(qat, images)
    exported = predict(load_interpreter(to_tflite(model, tmp_path / "int8.tflite", "int8",
                                                  representative_data=calibration, metadata=False)), images)
    ratio = np.abs(simulated - reference).mean() / np.abs(exported - reference).mean()
    print(f"{family}: mean |QAT - float| / mean |int8 - float| = {ratio:.2f}")
    assert 0.6 <= ratio <= 2.5
    qat.save(tmp_path / "qat.keras")
    loaded = keras.models.load_model(tmp_path / "qat.keras")  # plain Keras, safe mode
    assert is_quantized(loaded)
    np.testing.assert_allclose(outputs(loaded, images), simulated, atol=1e-5)
    # and it exports: its own int8 file, and the Edge TPU form of its float weights
    for name, graph in (("qat_int8", loaded), ("qat_edgetpu", edgetpu_model(loaded, experts_on_cpu=True))):
        path = to_tflite(graph, tmp_path / f"{name}.tflite", "int8", representative_data=calibration, metadata=False)
        deviation = np.abs(predict(load_interpreter(path), images) - reference).mean() / np.abs(reference).mean()
        print(f"{family} {name}: mean |tflite - float| / mean |float| = {deviation:.3f}")
        assert deviation < 0.2  # measured 0.007-0.09; a dropped or scrambled block gives ~1


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


def cli_ok(*args):
    import contextlib
    import io

    from keras_mixer_cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    assert code == 0, f"keras-mixer {' '.join(map(str, args))} exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


@pytest.mark.slow  # each family: a float run and a QAT run on a texture folder, 2-4 minutes (the Mixer's runs in
# the default suite: tests/test_own_images.py)
@pytest.mark.parametrize("family", ["as_mlp", "hire_mlp", "vip", "raft_mlp", "sparse_mlp"])
def test_keras_mixer_qat_trains_each_family_and_ends_at_or_above_post_training_int8(family, tmp_path):
    import json

    from image_folders import CLASSES, make_image_folders

    data = tmp_path / "textures"
    make_image_folders(data, per_class=40)
    keras.utils.set_random_seed(0)
    small = SMALL[family]() if family != "raft_mlp" else keras_mixer.RaftMLP(  # square: folders are resized so
        [dict(depth=1, dim=8, patch_size=4, raft_size=2, embedding_kernels=(4, 8)),
         dict(depth=1, dim=16, patch_size=2, raft_size=2, embedding_kernels=(2, 4))], input_shape=(32, 32, 3))
    features = small.get_layer("head").input  # the family's features, a head for the folder's classes
    small = keras.Model(small.inputs, keras.layers.Dense(len(CLASSES), name="head")(features), name=small.name)
    small.save(tmp_path / "small.keras")
    size = small.input_shape[1]
    cli_ok("train", "--model", tmp_path / "small.keras", "--dataset", data, "--recipe", "digits", "--epochs", 4,
           "--batch-size", 32, "--image-size", size, "--output", tmp_path / "float")
    cli_ok("qat", tmp_path / "float" / "model.keras", "--dataset", data, "--epochs", 2, "--calibration-samples", 64,
           "--output", tmp_path / "qat")
    report = json.loads((tmp_path / "qat" / "report.json").read_text())
    print(f"{family}: float {report['float_eval_top1']:.2%}, PTQ {report['ptq_eval_top1']:.2%}, "
          f"QAT {report['eval_top1']:.2%}")
    assert report["eval_top1"] >= report["ptq_eval_top1"]  # the best interval, the calibrated start included
