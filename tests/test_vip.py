import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_mixer
from digits_helpers import digits_family_tests
from keras_mixer.errors import WeightsError
from keras_mixer.layers import WeightedPermuteMLP
from reference_ops import authors_normalize, random_pixels
from vip_reference import vip_forward, vip_state_dict, weighted_permute_mlp

# trainable parameters at 224x224, 1000 classes, measured from the authors' implementation (spec sheet)
PARAM_COUNTS = {"VisionPermutatorSmall14": 29_892_904, "VisionPermutatorSmall7": 25_114_984,
                "VisionPermutatorMedium7": 55_272_488, "VisionPermutatorLarge7": 87_784_936}


@pytest.mark.parametrize("builder, expected", PARAM_COUNTS.items())
def test_parameter_counts(builder, expected):
    assert getattr(keras_mixer, builder)().count_params() == expected


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


# a small ViP with a 2x downsample and a 1x1 width change: 32x32 input, patch 4 -> 8x8 grid, then 4x4
SMALL = {"layers": (1, 2, 1), "embed_dims": (16, 32, 48), "transitions": (True, False, False),
         "segment_dim": (8, 4, 4), "mlp_ratios": (3, 3, 3), "patch_size": 4}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    state = vip_state_dict(np.random.default_rng(0), SMALL["layers"], SMALL["embed_dims"], SMALL["transitions"], 4, 10)
    path = tmp_path_factory.mktemp("vip") / "official.safetensors"
    save_file(state, str(path))
    return state, str(path)


def test_official_checkpoint_matches_reference_forward(checkpoint):
    """From pixels: our model fed `preprocess_input(pixels)` gives the authors' forward of their normalization of
    the same pixels (timm's ImageNet mean / std), which the builder applies inside the model."""
    state, path = checkpoint
    model = keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                                         weights=path)
    pixels = random_pixels((2, 32, 32, 3))
    expected = vip_forward(state, authors_normalize(pixels), SMALL["layers"], SMALL["embed_dims"],
                           SMALL["segment_dim"], SMALL["transitions"], 4)
    assert np.max(np.abs(model.predict(keras_mixer.preprocess_input(pixels), verbose=0) - expected)) <= 1e-4


def test_checkpoint_errors_name_the_key(checkpoint, tmp_path):
    state, _ = checkpoint
    broken = {**state, "network.0.0.attn.mlp_h.weight": np.zeros((16, 15), "float32")}
    save_file(broken, str(tmp_path / "broken.safetensors"))
    with pytest.raises(WeightsError, match=r"network_0_0/attn/mlp_h/kernel.*\(15, 16\).*\(16, 16\)"):
        keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), classes=10,
                                     weights=str(tmp_path / "broken.safetensors"))
    missing = {k: v for k, v in state.items() if k != "network.1.proj.bias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(WeightsError, match="missing keys.*network_1_proj/bias"):
        keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), classes=10,
                                     weights=str(tmp_path / "missing.safetensors"))


def test_registry_and_features():
    assert {"vip_small14", "vip_small7", "vip_medium7", "vip_large7"} <= set(keras_mixer.list_models())
    model = keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 8, 8, 16), (None, 4, 4, 32), (None, 4, 4, 48)]
    pooled = keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    assert pooled.output_shape == (None, 48)


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.VisionPermutator(**SMALL, input_shape=(32, 32, 3), classes=10, classifier_activation=None))
