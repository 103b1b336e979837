import keras
import numpy as np
import pytest

import keras_mixer
from digits_helpers import digits_family_tests
from families import SPARSE_MLP as SMALL, outputs
from keras_mixer.errors import WeightsError
from keras_mixer.layers import MixtureOfExperts, SparseMixerBlock
from reference_ops import layer_norm
from sparse_mlp_reference import auxiliary_loss, moe_forward, sparse_mlp_forward


def moe_params(layer):
    return {name: keras.ops.convert_to_numpy(value).astype(np.float64) for name, value in
            (("router", layer.router.kernel), ("kernel_0", layer.kernel_0), ("bias_0", layer.bias_0),
             ("kernel_1", layer.kernel_1), ("bias_1", layer.bias_1))}


def random_moe(items, dim, weights_seed=0, **options):
    layer = MixtureOfExperts(**{"num_experts": 4, "hidden_dim": 6, **options})
    layer.build((None, items, dim))
    rng = np.random.default_rng(weights_seed)
    for variable in layer.weights:
        variable.assign(rng.normal(0, 0.5, variable.shape))
    return layer


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
@pytest.mark.parametrize("k, prioritized", [(1, True), (2, True), (2, False), (3, False)])
@pytest.mark.parametrize("training", [False, True])
def test_moe_matches_loop_reference(dispatch, k, prioritized, training):
    # a tight capacity (min 2, factor 0.5) so items are dropped and the queue order matters
    layer = random_moe(12, 5, k=k, batch_prioritized=prioritized, dispatch=dispatch, capacity_factor_train=0.5,
                       capacity_factor_eval=0.75, min_capacity=2, noise_std=0.0)
    x = np.random.default_rng(1).normal(size=(3, 12, 5)).astype("float32")
    capacity = layer.capacity(training)
    assert capacity == max(2, int(np.ceil(k * (0.5 if training else 0.75) * 12 / 4)))
    expected = moe_forward(x.astype(np.float64), moe_params(layer), k, capacity, prioritized)
    got = keras.ops.convert_to_numpy(layer(x, training=training))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    dropped = np.mean(np.all(expected == 0, axis=-1))
    assert k > 1 or dropped > 0  # the test exercises capacity overflow


def test_sparse_and_dense_dispatch_agree_with_router_noise():
    sparse = random_moe(16, 6, k=2, noise_std=0.3, capacity_factor_train=0.5, seed=7)
    dense = random_moe(16, 6, k=2, noise_std=0.3, capacity_factor_train=0.5, seed=7, dispatch="dense")
    x = np.random.default_rng(2).normal(size=(2, 16, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(sparse(x, training=True)),
                               keras.ops.convert_to_numpy(dense(x, training=True)), atol=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_auxiliary_loss_matches_reference(k):
    layer = random_moe(10, 5, k=k, noise_std=0.25, aux_weight=0.01)
    rng = np.random.default_rng(3)
    clean = rng.normal(size=(2, 10, 4)).astype("float32")
    noisy = (clean + rng.normal(0, 0.25, clean.shape)).astype("float32")
    got = float(keras.ops.convert_to_numpy(layer.auxiliary_loss(clean, noisy)))
    assert got == pytest.approx(auxiliary_loss(clean.astype(np.float64), noisy.astype(np.float64), k, 0.25, 0.01),
                                rel=1e-4)


def test_auxiliary_loss_is_added_in_training_only():
    layer = random_moe(10, 5, k=2)
    x = np.random.default_rng(4).normal(size=(2, 10, 5)).astype("float32")
    layer(x, training=False)
    assert not layer.losses
    layer(x, training=True)
    assert len(layer.losses) == 1 and float(keras.ops.convert_to_numpy(layer.losses[0])) > 0


@pytest.mark.parametrize("rerep", [None, "token", "both"])
def test_sparse_block_matches_reference(rerep):
    tokens, channels = 6, 8
    block = SparseMixerBlock(5, 12, token_experts=3, channel_experts=2, token_k=1, channel_k=2, rerep=rerep,
                             min_capacity=1, capacity_factor_eval=1.0)
    block.build((None, tokens, channels))
    rng = np.random.default_rng(5)
    for variable in block.weights:
        variable.assign(rng.normal(0, 0.4, variable.shape))
    x = rng.normal(size=(2, tokens, channels)).astype("float32")

    def norm(v, layer):
        return layer_norm(v, {"n.weight": np.asarray(layer.scale), "n.bias": np.asarray(layer.bias)}, "n", 1e-6)

    def dense(v, layer):
        return v @ np.asarray(layer.kernel, np.float64) + np.asarray(layer.bias, np.float64)

    def moe(v, layer):  # v: [batch, items, dim]
        return moe_forward(v, moe_params(layer), layer.k, layer.capacity(False), True)

    y = norm(x.astype(np.float64), block.norm_0)
    if rerep:
        y = dense(y, block.rerep_in_channels)
    y = y.transpose(0, 2, 1)
    if rerep:
        y = dense(y, block.rerep_in_tokens)
    y = moe(y, block.token_moe)
    if rerep == "both":
        y = moe(y.transpose(0, 2, 1), block.channel_moe).transpose(0, 2, 1)
    if rerep:
        y = dense(y, block.rerep_out_tokens)
    y = y.transpose(0, 2, 1)
    if rerep:
        y = dense(y, block.rerep_out_channels)
    expected = x + y
    if rerep != "both":
        expected = expected + moe(norm(expected, block.norm_1), block.channel_moe)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, atol=1e-4)


def test_registry_features_and_weights_errors(tmp_path):
    assert {"sparse_mlp_small", "sparse_mlp_base", "sparse_mlp_large"} <= set(keras_mixer.list_models())
    features = keras_mixer.SparseMLP(**SMALL, input_shape=(32, 32, 3), include_top=False)
    assert features.output_shape == (None, 4, 4, 32)
    with pytest.raises(WeightsError, match="no released checkpoint"):
        keras_mixer.SparseMLP(**SMALL, input_shape=(32, 32, 3), weights=str(tmp_path / "sparse.pth"))


(trained, test_trains_on_digits_and_round_trips, test_tflite_export_agrees_with_keras,
 test_edgetpu_form_keeps_top1) = digits_family_tests(
    lambda: keras_mixer.SparseMLP(**SMALL, input_shape=(32, 32, 3), classes=10, classifier_activation=None))


def test_reports_aux_loss_and_dense_dispatch_agrees(trained):
    model, history, _, x_test, _ = trained
    assert "aux_loss" in history and all(0 < value < 0.1 for value in history["aux_loss"]), history
    dense = keras_mixer.models.with_dispatch(model, "dense")
    np.testing.assert_allclose(outputs(dense, x_test), outputs(model, x_test), atol=1e-4)


@pytest.mark.parametrize("dispatch", ["sparse", "dense"])
def test_whole_model_matches_the_reference_from_the_equations(dispatch):
    """Stem, two dense Mixer blocks, two Sparse blocks (re-represented token experts top-1, channel experts top-2),
    head: every weight random, against `sparse_mlp_forward` (written from the spec, not from our layers)."""
    model = keras_mixer.SparseMLP(4, 16, 4, 8, 32, num_sparse_blocks=2, token_experts=3, channel_experts=2,
                                  dispatch=dispatch, input_shape=(16, 16, 3), classes=5, classifier_activation=None)
    rng = np.random.default_rng(7)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape) + variable.path.endswith("scale"))
    x = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    expected = sparse_mlp_forward({v.path: keras.ops.convert_to_numpy(v) for v in model.weights}, x, 4, 2, 2)
    assert np.ptp(expected) > 0.1
    np.testing.assert_allclose(outputs(model, x), expected, atol=1e-4)
