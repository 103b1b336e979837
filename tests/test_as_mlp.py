import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_mixer
from reference_ops import authors_normalize, random_pixels
from as_mlp_reference import as_mlp_forward, random_state_dict, shift
from digits_helpers import digits_family_tests
from keras_mixer.errors import WeightsError
from keras_mixer.layers import axial_shift

# trainable parameters at 224x224, 1000 classes, measured from the authors' implementation (spec sheet)
PARAM_COUNTS = {"ASMLPTiny": 28_282_696, "ASMLPSmall": 49_594_696, "ASMLPBase": 87_752_808}


@pytest.mark.parametrize("builder, expected", PARAM_COUNTS.items())
def test_parameter_counts(builder, expected):
    assert getattr(keras_mixer, builder)().count_params() == expected


@pytest.mark.parametrize("channels, height, width, dilation", [(16, 6, 6, 1), (7, 5, 9, 1), (10, 8, 3, 2), (3, 4, 4, 1)])
@pytest.mark.parametrize("axis", [1, 2])
def test_axial_shift_matches_reference(channels, height, width, dilation, axis):
    x = np.random.default_rng(0).normal(size=(2, height, width, channels)).astype("float32")
    expected = shift(x.transpose(0, 3, 1, 2), 5, {1: 2, 2: 3}[axis], dilation).transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(axial_shift(x, 5, axis, dilation))
    np.testing.assert_allclose(got, expected, atol=1e-6)


DEPTHS = (1, 2, 1, 1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = random_state_dict(np.random.default_rng(0), 8, DEPTHS, 10)
    path = tmp_path_factory.mktemp("as_mlp") / "official.safetensors"
    save_file(state, str(path))
    return state, str(path)


def test_official_checkpoint_matches_reference_forward(checkpoint):
    """From pixels: our model fed `preprocess_input(pixels)` gives the authors' forward of their normalization of
    the same pixels (timm's ImageNet mean / std), which the builder applies inside the model."""
    state, path = checkpoint
    model = keras_mixer.ASMLP(8, DEPTHS, input_shape=(32, 32, 3), classes=10, classifier_activation=None, weights=path)
    pixels = random_pixels((2, 32, 32, 3))
    expected = as_mlp_forward(state, authors_normalize(pixels), DEPTHS)
    assert np.max(np.abs(model.predict(keras_mixer.preprocess_input(pixels), verbose=0) - expected)) <= 1e-4


def test_checkpoint_errors_name_the_key(checkpoint, tmp_path):
    state, _ = checkpoint
    broken = dict(state)
    broken["layers.0.blocks.0.axial_shift.conv1.weight"] = np.zeros((8, 9, 1, 1), "float32")
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightsError, match=r"layers_0_blocks_0/axial_shift/conv1/kernel.*\(9, 8\).*\(8, 8\)"):
        keras_mixer.ASMLP(8, DEPTHS, input_shape=(32, 32, 3), classes=10, weights=str(tmp_path / "broken.safetensors"))
    extra = {**state, "layers.0.blocks.0.attn.qkv.weight": np.zeros(3, "float32")}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(WeightsError, match="unexpected key 'layers.0.blocks.0.attn.qkv.weight'"):
        keras_mixer.ASMLP(8, DEPTHS, input_shape=(32, 32, 3), classes=10, weights=str(tmp_path / "extra.safetensors"))


def test_backbone_stages_and_sizes():
    model = keras_mixer.ASMLP(8, DEPTHS, input_shape=(64, 96, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 24, 8), (None, 8, 12, 16), (None, 4, 6, 32),
                                                      (None, 2, 3, 64)]
    with pytest.raises(ValueError, match="multiple of 32"):
        keras_mixer.ASMLP(8, DEPTHS, input_shape=(48, 48, 3))


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.ASMLP(16, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=10, classifier_activation=None))
