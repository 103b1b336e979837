import keras
import numpy as np
import pytest

import keras_mixer
from digits_helpers import digits_family_tests
from families import HIRE_MLP as CONFIG, outputs
from reference_ops import authors_normalize, random_pixels
from hire_mlp_reference import hire_mlp_forward, random_state_dict
from keras_mixer.layers.hire_mlp import channels_to_regions, circular_pad, regions_to_channels, roll


@pytest.mark.parametrize("height, width, pixel, step", [(8, 8, 4, 2), (5, 7, 3, 1), (7, 6, 2, 0), (3, 3, 3, 2)])
@pytest.mark.parametrize("axis", [1, 2])
def test_rearrangements_match_reference(height, width, pixel, step, axis):
    """Spec: roll by +step (circular), pad circularly to a multiple of pixel, t[(c, k), r] = x[c, r*p + k]."""
    x = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype("float32")
    rolled = np.roll(x, step, axis=axis)
    length = x.shape[axis]
    padded = np.concatenate([rolled, np.take(rolled, range((-length) % pixel), axis=axis)], axis=axis)
    regions = padded.shape[axis] // pixel
    expected = np.zeros([2, regions if axis == 1 else height, regions if axis == 2 else width, 3 * pixel], "float32")
    for r in range(regions):
        for k in range(pixel):
            for c in range(3):
                src = np.take(padded, r * pixel + k, axis=axis)
                if axis == 1:
                    expected[:, r, :, c * pixel + k] = src[..., c]
                else:
                    expected[:, :, r, c * pixel + k] = src[..., c]
    got = regions_to_channels(circular_pad(roll(x, step, axis), pixel, axis), pixel, axis)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, atol=1e-6)
    back = channels_to_regions(got, pixel, axis)
    index = [slice(None)] * 4
    index[axis] = slice(0, length)
    restored = keras.ops.convert_to_numpy(roll(back[tuple(index)], (-step) % length, axis))
    np.testing.assert_allclose(restored, x, atol=1e-6)


def test_backbone_stages():
    model = keras_mixer.HireMLP(**CONFIG, input_shape=(64, 96, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 24, 8), (None, 8, 12, 16), (None, 4, 6, 24),
                                                      (None, 2, 3, 32)]


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.HireMLP(**{**CONFIG, "layers": (1, 1, 1, 1)}, input_shape=(32, 32, 3), classes=10,
                                classifier_activation=None))


def test_old_builder_name_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="keras_mixer.HireMLP"):
        model = keras_mixer.HireMLPModel(**CONFIG, input_shape=(32, 32, 3), classes=10)
    assert model.count_params() == keras_mixer.HireMLP(**CONFIG, input_shape=(32, 32, 3), classes=10).count_params()


def test_files_saved_before_the_layer_was_renamed_still_load(tmp_path):
    """The token-mixing layer was public as `keras_mixer.layers.HireMLP` (the model builder's name too) until it
    became `HierarchicalRearrangement`. Our models save it inside `HireBlock`'s config, but a user's own model built
    from the layer names its class: such a file, saved under the old name, loads into the same function."""
    import zipfile

    from keras_mixer.layers import HierarchicalRearrangement

    images = keras.Input((6, 5, 8))
    model = keras.Model(images, HierarchicalRearrangement(pixel=3, step=1, name="attn")(images))
    model.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as new, zipfile.ZipFile(tmp_path / "old.keras", "w") as old:
        for item in new.infolist():
            data = new.read(item)
            if item.filename == "config.json":
                assert b'"keras_mixer>HierarchicalRearrangement"' in data
                data = data.replace(b"HierarchicalRearrangement", b"HireMLP")
            old.writestr(item, data)
    x = np.random.default_rng(1).normal(size=(2, 6, 5, 8)).astype("float32")
    loaded = keras.models.load_model(tmp_path / "old.keras")
    assert isinstance(loaded.get_layer("attn"), HierarchicalRearrangement)
    np.testing.assert_allclose(outputs(loaded, x), outputs(model, x), atol=1e-6)


def test_imagenet_tag_reads_the_authors_training_checkpoint(tmp_path, monkeypatch):
    """The authors release full training checkpoints: {'model': state_dict, 'optimizer': ..., 'args': Namespace}.
    Read with weights_only=True and only argparse.Namespace allowed; offline, from $KERAS_MIXER_WEIGHTS_DIR."""
    import argparse

    torch = pytest.importorskip("torch")
    assert "imagenet" in keras_mixer.list_pretrained("hire_mlp_tiny")
    config = dict(layers=(2, 2, 4, 2), dims=(64, 128, 320, 512), pixel=(4, 3, 3, 2), classes=1000)
    state = random_state_dict(np.random.default_rng(0), **config)
    checkpoint = {"model": {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()},
                  "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}, "epoch": 299,
                  "args": argparse.Namespace(model="hire_mlp_tiny", lr=1e-3)}
    torch.save(checkpoint, tmp_path / "hire_mlp_tiny.imagenet1k.pth")
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="no published hash"):
        model = keras_mixer.HireMLPTiny(weights="imagenet", input_shape=(64, 64, 3), classifier_activation=None)
    pixels = random_pixels((1, 64, 64, 3))
    expected = hire_mlp_forward(state, authors_normalize(pixels), (2, 2, 4, 2), (4, 3, 3, 2), (2, 2, 3, 2),
                                (2, 2, 1, 1))
    assert np.max(np.abs(outputs(model, keras_mixer.preprocess_input(pixels)) - expected)) <= 1e-4


def test_calibration_leaves_every_float_variable_bit_identical():
    """`quantize_model(calibration_data=...)` runs its forward passes in training mode to set the activation
    ranges; Hire-MLP's BatchNorm moving statistics (and every other float variable) keep the float model's values."""
    from keras_mixer.quantization import quantize_model

    model = keras_mixer.HireMLP(**{**CONFIG, "layers": (1, 1, 1, 1)}, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # non-trivial moving statistics, so a rewrite cannot go unseen
        variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    moving = [v.path for v in model.weights if "moving_" in v.path]
    assert moving
    before = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    qat = quantize_model(model, calibration_data=rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32"))
    after = {v.path: keras.ops.convert_to_numpy(v) for v in qat.weights if v.path in before}
    assert after.keys() == before.keys()
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    ranges = [keras.ops.convert_to_numpy(v) for v in qat.weights if v.path.endswith("range_max")]
    assert ranges and max(ranges) > 0  # calibration did set the ranges
