import keras
import numpy as np
import pytest

import keras_mixer
from as_mlp_reference import shift
from digits_helpers import digits_family_tests
from families import AS_MLP
from keras_mixer.layers import axial_shift


@pytest.mark.parametrize("channels, height, width, dilation", [(16, 6, 6, 1), (7, 5, 9, 1), (10, 8, 3, 2), (3, 4, 4, 1)])
@pytest.mark.parametrize("axis", [1, 2])
def test_axial_shift_matches_reference(channels, height, width, dilation, axis):
    x = np.random.default_rng(0).normal(size=(2, height, width, channels)).astype("float32")
    expected = shift(x.transpose(0, 3, 1, 2), 5, {1: 2, 2: 3}[axis], dilation).transpose(0, 2, 3, 1)
    got = keras.ops.convert_to_numpy(axial_shift(x, 5, axis, dilation))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_backbone_stages_and_sizes():
    model = keras_mixer.ASMLP(8, AS_MLP["depths"], input_shape=(64, 96, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 16, 24, 8), (None, 8, 12, 16), (None, 4, 6, 32),
                                                      (None, 2, 3, 64)]
    with pytest.raises(ValueError, match="multiple of 32"):
        keras_mixer.ASMLP(8, AS_MLP["depths"], input_shape=(48, 48, 3))


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.ASMLP(16, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=10, classifier_activation=None))
