import keras
import numpy as np
import pytest

import keras_mixer
from digits_helpers import digits_family_tests
from families import VIP as SMALL
from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import WeightedPermuteMLP
from vip_reference import weighted_permute_mlp


@pytest.mark.parametrize("grid, channels, segment_dim", [(8, 16, 8), (4, 24, 4), (6, 18, 6)])
def test_weighted_permute_mlp_matches_reference(grid, channels, segment_dim):
    layer = WeightedPermuteMLP(segment_dim)
    x = np.random.default_rng(0).normal(size=(2, grid, grid, channels)).astype("float32")
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    for variable in layer.weights:  # non-trivial biases too
        variable.assign(rng.normal(0, 0.3, variable.shape))
    c = channels
    sd = {"mlp_h.weight": layer.mlp_h.kernel, "mlp_w.weight": layer.mlp_w.kernel, "mlp_c.weight": layer.mlp_c.kernel,
          "reweight.fc1.weight": layer.reweight.fc1.kernel, "reweight.fc1.bias": layer.reweight.fc1.bias,
          "reweight.fc2.weight": layer.reweight.fc2.kernel, "reweight.fc2.bias": layer.reweight.fc2.bias,
          "proj.weight": layer.proj.kernel, "proj.bias": layer.proj.bias}
    sd = {k: keras.ops.convert_to_numpy(v).astype(np.float64) for k, v in sd.items()}
    sd = {k: v.T if k.endswith("weight") else v for k, v in sd.items()}  # Keras (in, out) -> torch (out, in)
    assert sd["reweight.fc2.weight"].shape == (3 * c, c // 4)
    expected = weighted_permute_mlp(x.astype(np.float64), sd, "", segment_dim)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


def test_grid_must_fit_segment_dim():
    with pytest.raises(ValueError, match="8x8 grid with 16 channels does not fit segment_dim 4"):
        WeightedPermuteMLP(4).build((None, 8, 8, 16))


@pytest.mark.parametrize("size", [100, 112])
def test_an_input_size_the_config_does_not_fix_is_refused_naming_the_size_it_takes(size):
    """A size the patch divides (112) as well as one it does not (100): the stage's refusal named a 16x16 or 14x14
    grid and segment_dim 32, not the input size to give."""
    with pytest.raises(KerasMixerError, match=f"Input size {size}x{size}: this Vision Permutator takes 224x224 "
                                              r"\(patch_size 7 x segment_dim 32, its first stage's grid\)"):
        keras_mixer.create_model("vip_small7", input_shape=(size, size, 3), classes=10)


def test_registry_and_features():
    assert {"vip_small14", "vip_small7", "vip_medium7", "vip_large7"} <= set(keras_mixer.list_models())
    model = keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 8, 8, 16), (None, 4, 4, 32), (None, 4, 4, 48)]
    pooled = keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    assert pooled.output_shape == (None, 48)


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), classes=10, classifier_activation=None))
