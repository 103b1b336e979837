import keras
import numpy as np
import pytest

import keras_mixer
from digits_helpers import digits_family_tests
from families import RAFT_MLP as SMALL
from keras_mixer.layers import CrossScaleEmbedding, RaftBlock
from raft_mlp_reference import embed, raft_mixing, sequential_mlp
from reference_ops import layer_norm


def randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape))


def torch_params(layer, names):
    """{official name: array in torch layout} for `names` {official module: our sub-layer path}."""
    values = {v.path.split("/", 1)[1]: keras.ops.convert_to_numpy(v).astype(np.float64) for v in layer.weights}
    sd = {}
    for official, ours in names.items():
        if f"{ours}/kernel" in values:
            sd[official + ".weight"], sd[official + ".bias"] = values[f"{ours}/kernel"].T, values[f"{ours}/bias"]
        else:
            sd[official + ".weight"], sd[official + ".bias"] = values[f"{ours}/scale"], values[f"{ours}/bias"]
    return sd


@pytest.mark.parametrize("patch, kernels", [(4, (4, 8)), (2, (2, 4, 6)), (2, (2,))])
def test_cross_scale_embedding_matches_unfold_reference(patch, kernels):
    x = np.random.default_rng(0).normal(size=(2, 12, 8, 3)).astype("float32")
    layer = CrossScaleEmbedding(5, patch, kernels, name="embedding")
    layer.build(x.shape)
    randomize(layer)
    sd = {"fc.weight": keras.ops.convert_to_numpy(layer.kernel).T, "fc.bias": keras.ops.convert_to_numpy(layer.bias)}
    tokens, h, w = embed(x.transpose(0, 3, 1, 2).astype(np.float64), sd, "fc", patch, kernels)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), tokens.reshape(2, h, w, 5), atol=1e-5)


@pytest.mark.parametrize("height, width, channels, rafts", [(4, 6, 8, 2), (3, 3, 12, 3), (5, 2, 6, 1)])
def test_raft_block_matches_reference(height, width, channels, rafts):
    x = np.random.default_rng(0).normal(size=(2, height, width, channels)).astype("float32")
    block = RaftBlock(rafts, name="block")
    block.build(x.shape)
    randomize(block)
    sd = torch_params(block, {"1.norm.1": "vertical_norm", "1.fn.0": "vertical_mlp/Dense_0",
                              "1.fn.3": "vertical_mlp/Dense_1", "3.norm.1": "horizontal_norm",
                              "3.fn.0": "horizontal_mlp/Dense_0", "3.fn.3": "horizontal_mlp/Dense_1",
                              "5.norm": "channel_norm", "5.fn.0": "channel_mlp/Dense_0",
                              "5.fn.3": "channel_mlp/Dense_1"})
    tokens = x.astype(np.float64).reshape(2, height * width, channels)
    tokens = raft_mixing(tokens, sd, "1", height, width, rafts, vertical=True)
    tokens = raft_mixing(tokens, sd, "3", height, width, rafts, vertical=False)
    tokens = tokens + sequential_mlp(layer_norm(tokens, sd, "5.norm"), sd, "5.fn")
    expected = tokens.reshape(2, height, width, channels)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=1e-4)


def test_registry_features_and_size_errors():
    assert {"raft_mlp_small", "raft_mlp_medium", "raft_mlp_large"} <= set(keras_mixer.list_models())
    model = keras_mixer.RaftMLP(SMALL, input_shape=(32, 32, 3), include_top=False, return_stages=True)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 8, 8, 16), (None, 4, 4, 24), (None, 2, 2, 32)]
    with pytest.raises(ValueError, match="multiple of 16"):
        keras_mixer.RaftMLP(SMALL, input_shape=(40, 40, 3))


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.RaftMLP(SMALL, input_shape=(32, 32, 3), classes=10, classifier_activation=None))
