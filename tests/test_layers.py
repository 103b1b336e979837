import keras
import numpy as np
import pytest
from scipy.special import erf

from keras_mixer import layers

# Every public layer, built small: (layer, input shape; a list of shapes for a layer called on a list)
LAYER_CASES = [
    (layers.ActivationQuantizer(decay=0.9), (2, 5, 6)),
    (layers.ASMLPBlock(shift_size=3, mlp_ratio=2.0, drop_path_rate=0.1), (2, 6, 6, 8)),
    (layers.AxialShift(shift_size=3, dilation=1), (2, 6, 6, 8)),
    (layers.CrossScaleEmbedding(dim=8, patch_size=2, kernels=(2, 4)), (2, 8, 8, 3)),
    (layers.DropPath(0.3, seed=1), (2, 5, 6)),
    (layers.HierarchicalRearrangement(pixel=3, step=1), (2, 6, 5, 8)),
    (layers.HireBlock(pixel=3, step=1, mlp_ratio=2.0), (2, 6, 5, 8)),
    (layers.InputNormalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), (2, 4, 4, 3)),
    (layers.LayerNorm(epsilon=1e-5), (2, 5, 6)),
    (layers.MixerBlock(4, 12, gelu="exact", drop_path_rate=0.2, dropout_rate=0.1, epsilon=1e-5), (2, 5, 6)),
    (layers.MixtureOfExperts(num_experts=2, hidden_dim=8, k=1, dispatch="dense"), (2, 5, 6)),
    (layers.MlpBlock(7, gelu="exact", dropout_rate=0.1), (2, 5, 6)),
    (layers.PatchEmbedding(4, 6), (2, 8, 12, 3)),
    (layers.PatchMerging(), (2, 6, 6, 8)),
    (layers.PermutatorBlock(segment_dim=4, mlp_ratio=2.0), (2, 4, 4, 8)),
    (layers.QuantizedDense(5), (2, 5, 6)),
    (layers.RaftBlock(raft_size=2), (2, 4, 4, 8)),
    (layers.SparseMixerBlock(4, 12, token_experts=2, channel_experts=2, dispatch="dense"), (2, 4, 6)),
    (layers.SplitAttention(), [(2, 4, 4, 8)] * 3),
    (layers.WeightedPermuteMLP(segment_dim=4), (2, 4, 4, 8)),
]
CASE_IDS = [type(layer).__name__ for layer, _ in LAYER_CASES]


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    if isinstance(shape, list):
        return [rng.normal(size=one).astype("float32") for one in shape]
    return rng.normal(size=shape).astype("float32")


def _numpy(outputs):
    return keras.ops.convert_to_numpy(outputs)


def test_every_public_layer_has_a_case():
    public = {name for name in layers.__all__ if isinstance(getattr(layers, name), type)}
    assert public == set(CASE_IDS), f"layers without a case: {sorted(public - set(CASE_IDS))}"


@pytest.mark.parametrize("layer, shape", LAYER_CASES, ids=CASE_IDS)
def test_get_config_from_config_round_trip(layer, shape):
    x = _inputs(shape)
    expected = _numpy(layer(x))
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone.build(shape)
    assert len(clone.weights) == len(layer.weights)
    for source, target in zip(layer.weights, clone.weights):
        assert source.path.split("/", 1)[1] == target.path.split("/", 1)[1]
        target.assign(source)
    np.testing.assert_array_equal(_numpy(clone(x)), expected)


@pytest.mark.parametrize("layer, shape", LAYER_CASES, ids=CASE_IDS)
def test_keras_file_round_trip(layer, shape, tmp_path):
    """In a model saved to `.keras` and loaded with plain Keras (safe mode, no custom_objects): the same outputs
    from the same weights, every variable restored."""
    config = layer.get_config()
    fresh = type(layer).from_config(config)
    inputs = [keras.Input(one[1:]) for one in shape] if isinstance(shape, list) else keras.Input(shape[1:])
    model = keras.Model(inputs, fresh(inputs))
    rng = np.random.default_rng(1)
    for variable in model.weights:  # not the initial values: zero biases and unit scales hide a lost variable
        variable.assign(variable + rng.normal(scale=0.1, size=variable.shape).astype(variable.dtype))
    x = _inputs(shape, seed=2)
    model.save(tmp_path / "layer.keras")
    loaded = keras.models.load_model(tmp_path / "layer.keras")
    np.testing.assert_allclose(_numpy(loaded(x)), _numpy(model(x)), rtol=1e-6, atol=1e-6)
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]


def test_layer_norm_matches_keras_layer_normalization():
    x = np.random.default_rng(0).normal(3.0, 2.0, (4, 9, 16)).astype("float32")
    ours = layers.LayerNorm(epsilon=1e-6)
    reference = keras.layers.LayerNormalization(epsilon=1e-6)
    ours.build(x.shape)
    reference.build(x.shape)
    scale = np.random.default_rng(1).normal(1, 0.2, 16).astype("float32")
    bias = np.random.default_rng(2).normal(0, 0.2, 16).astype("float32")
    ours.scale.assign(scale), ours.bias.assign(bias)
    reference.gamma.assign(scale), reference.beta.assign(bias)
    np.testing.assert_allclose(ours(x), reference(x), atol=2e-6)


def test_patch_embedding_is_the_official_strided_convolution():
    """The stem runs as one matmul over flattened patches (for XNNPACK's speed); it must be the official
    kernel = stride = patch convolution, tokens row-major: checked against the sum written out, on a grid with
    more columns than rows and a batch of 2 (a mixed-up patch or token order would differ)."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    layer = layers.PatchEmbedding(4, 5)
    layer.build(images.shape)
    kernel, bias = rng.normal(size=(4, 4, 3, 5)).astype("float32"), rng.normal(size=5).astype("float32")
    layer.kernel.assign(kernel), layer.bias.assign(bias)
    expected = np.stack([
        np.einsum("bhwc,hwco->bo", images[:, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4], kernel) + bias
        for row in range(2) for col in range(3)], axis=1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images)), expected, atol=1e-5)


@pytest.mark.parametrize("form", ["tanh", "exact"])
def test_gelu_forms(form):
    x = np.linspace(-5, 5, 101)
    if form == "tanh":
        expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    else:
        expected = 0.5 * x * (1 + erf(x / np.sqrt(2)))
    got = keras.ops.convert_to_numpy(layers.gelu(x.astype("float32"), form))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_drop_path_drops_whole_samples_and_rescales():
    layer = layers.DropPath(0.25, seed=0)
    x = np.ones((4000, 3, 5), "float32")
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    per_sample = y.reshape(4000, -1)
    # each sample is either all zero or all 1/keep
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / 0.75)}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    dropped = np.mean(per_sample[:, 0] == 0.0)
    assert abs(dropped - 0.25) < 0.03
    assert abs(per_sample.mean() - 1.0) < 0.05  # expectation preserved
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)


def test_blocks_call_their_dropouts_only_when_they_drop(monkeypatch):
    """`dropped`: at rate 0 or at inference a block hands its branch on without calling the DropPath or Dropout
    (Keras' `__call__` costs host time on eager torch); training with a rate, it drops as before."""
    from keras_mixer.layers.drop_path import dropped

    import functools

    calls = []

    def spy(call):
        @functools.wraps(call)  # the same signature: Keras passes `training` only to a call that takes it
        def counted(self, *args, **kwargs):
            calls.append(self)
            return call(self, *args, **kwargs)
        return counted

    for layer_class in (layers.DropPath, keras.layers.Dropout):
        monkeypatch.setattr(layer_class, "call", spy(layer_class.call))
    x = np.ones((64, 4, 8), "float32")
    for layer in (layers.DropPath(0.5, seed=1), keras.layers.Dropout(0.5, seed=1)):
        assert dropped(layer, x, training=False) is x
        assert set(np.unique(keras.ops.convert_to_numpy(dropped(layer, x, training=True)))) == {0.0, 2.0}
    assert dropped(layers.DropPath(0.0), x, training=True) is x and len(calls) == 2
    tokens = np.random.default_rng(0).normal(size=(64, 4, 8)).astype("float32")
    for rates, expected_calls in (((0.0, 0.0), 0), ((0.5, 0.0), 2), ((0.0, 0.5), 4)):
        block = layers.MixerBlock(6, 12, drop_path_rate=rates[0], dropout_rate=rates[1])
        block(tokens)
        calls.clear()
        block(tokens, training=True)
        assert len(calls) == expected_calls
        calls.clear()
        block(tokens, training=False)
        assert not calls


def test_drop_path_rejects_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        layers.DropPath(1.0)


def test_mixer_block_needs_static_tokens():
    with pytest.raises(ValueError, match="static token count"):
        layers.MixerBlock(4, 8).build((None, None, 6))


def test_nested_layers_reaches_every_layer_inside_a_block_once_parents_first():
    """`nested_layers` is keras_mixer's one reader of Keras' private `Layer._flatten_layers` (QAT, channel
    equalization and the export find layers inside blocks through it): checked against a walk over the layers'
    own attributes, so a Keras release that changes it fails here by name."""
    from keras_mixer.layers.nesting import nested_layers

    def children(layer):
        return [value for value in vars(layer).values() if isinstance(value, keras.layers.Layer) and value is not layer]

    def by_attributes(layer):
        return [layer] + [inner for child in children(layer) for inner in by_attributes(child)]

    block = layers.MixerBlock(4, 12, quantize=True)
    model = keras.Sequential([keras.Input((5, 6)), block, keras.layers.Dense(3)])
    walked = nested_layers(block)
    expected = by_attributes(block)
    assert len(expected) > 10 and walked[0] is block
    assert len({id(layer) for layer in walked}) == len(walked)
    assert {id(layer) for layer in walked} == set(map(id, expected))
    position = {id(layer): index for index, layer in enumerate(walked)}
    assert all(position[id(parent)] < position[id(child)] for parent in expected for child in children(parent))
    in_model = [id(layer) for layer in nested_layers(model)]
    assert in_model[0] == id(model) and id(model.layers[-1]) in in_model
    assert set(position) < set(in_model) and len(set(in_model)) == len(in_model)
    assert id(model) not in [id(layer) for layer in nested_layers(model, include_self=False)]
