import keras
import numpy as np
import pytest

import keras_mixer
from families import MIXER as TINY, with_nonzero_weights
from mixer_reference import mixer_forward, random_params


def set_official_params(model, params):
    """Assigns official-layout parameters to the model's variables by path (which mirror the Flax names)."""
    assert sorted(v.path for v in model.weights) == sorted(params)
    for variable in model.weights:
        variable.assign(params[variable.path])


def test_imagenet21k_head_parameter_count():
    assert keras_mixer.MixerB16(classes=21843).count_params() == 75_908_739


@pytest.mark.parametrize("gelu", ["tanh", "exact"])
@pytest.mark.parametrize("height, width", [(16, 16), (16, 24)])
def test_forward_matches_numpy_reference(gelu, height, width):
    tokens = (height // 4) * (width // 4)
    params = random_params(np.random.default_rng(0), 4, 3, 8, tokens, 6, 12, 2, 5)
    model = keras_mixer.MLPMixer(
        **TINY, input_shape=(height, width, 3), classes=5, classifier_activation=None, gelu=gelu
    )
    set_official_params(model, params)
    images = np.random.default_rng(1).uniform(-1, 1, (3, height, width, 3)).astype("float32")
    expected = mixer_forward(params, images, patch=4, num_blocks=2, form=gelu)
    got = keras.ops.convert_to_numpy(model(images))
    assert np.max(np.abs(got - expected)) <= 1e-5


def test_gelu_forms_differ_so_the_option_matters():
    params = random_params(np.random.default_rng(0), 4, 3, 8, 16, 6, 12, 2, 5)
    images = np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    outputs = []
    for gelu in ("tanh", "exact"):
        model = keras_mixer.MLPMixer(**TINY, input_shape=(16, 16, 3), classes=5, classifier_activation=None, gelu=gelu)
        set_official_params(model, params)
        outputs.append(keras.ops.convert_to_numpy(model(images)))
    assert np.max(np.abs(outputs[0] - outputs[1])) > 1e-5


def test_bad_gelu_form_is_rejected():
    with pytest.raises(ValueError, match="gelu"):
        keras_mixer.MLPMixer(**TINY, input_shape=(16, 16, 3), gelu="relu")


@pytest.mark.parametrize("patch", [16, 32])
@pytest.mark.parametrize("height, width", [(64, 64), (96, 128)])
def test_variable_resolution(patch, height, width):
    model = keras_mixer.MLPMixer(
        patch, 16, 1, 8, 32, input_shape=(height, width, 3), include_top=False, classes=3
    )
    assert model.output_shape == (None, height // patch, width // patch, 16)
    tokens = (height // patch) * (width // patch)
    assert model.get_layer("MixerBlock_0").token_mixing.dense_0.kernel.shape == (tokens, 8)
    out = model(np.zeros((1, height, width, 3), "float32"))
    assert out.shape == (1, height // patch, width // patch, 16)


def test_size_not_multiple_of_patch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"100x100.*patch size 16"):
        keras_mixer.MixerB16(input_shape=(100, 100, 3))


@pytest.mark.parametrize("pooling, shape", [(None, (None, 4, 4, 8)), ("avg", (None, 8)), ("max", (None, 8))])
def test_include_top_false_pooling(pooling, shape):
    model = keras_mixer.MLPMixer(**TINY, input_shape=(16, 16, 3), include_top=False, pooling=pooling)
    assert model.output_shape == shape
    assert "head/kernel" not in [v.path for v in model.weights]


def test_backbone_features_match_reference_tokens():
    params = random_params(np.random.default_rng(2), 4, 3, 8, 16, 6, 12, 2, 5)
    model = keras_mixer.MLPMixer(**TINY, input_shape=(16, 16, 3), include_top=False)
    set_official_params(model, {k: v for k, v in params.items() if not k.startswith("head/")})
    images = np.random.default_rng(3).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    expected = mixer_forward(params, images, 4, 2, "tanh", include_head=False).reshape(2, 4, 4, 8)
    assert np.max(np.abs(keras.ops.convert_to_numpy(model(images)) - expected)) <= 1e-5


def test_bad_pooling_is_rejected():
    with pytest.raises(ValueError, match="pooling"):
        keras_mixer.MLPMixer(**TINY, input_shape=(16, 16, 3), include_top=False, pooling="sum")


def test_feature_extractor_returns_every_block():
    """Each output is its block's: block 0 applied to the stem, and the last block's grid, normalized, averaged and
    through a head with values (a fresh head is zeros: every logit 0, any features would "match") gives the logits."""
    model = with_nonzero_weights(keras_mixer.MLPMixer(**TINY, input_shape=(16, 24, 3), classes=5,
                                                      classifier_activation=None))
    extractor = keras_mixer.feature_extractor(model)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype("float32")
    features = [keras.ops.convert_to_numpy(f) for f in extractor(images)]
    assert [f.shape for f in features] == [(2, 4, 6, 8)] * 2
    first = model.get_layer("MixerBlock_0")(model.get_layer("stem")(images))
    np.testing.assert_allclose(features[0].reshape(2, 24, 8), keras.ops.convert_to_numpy(first), atol=1e-6)
    pooled = keras.ops.mean(model.get_layer("pre_head_layer_norm")(features[-1].reshape(2, 24, 8)), axis=1)
    logits = keras.ops.convert_to_numpy(model.get_layer("head")(pooled))
    expected = keras.ops.convert_to_numpy(model(images))
    assert np.ptp(expected) > 0.1  # logits that differ, so the comparison can fail
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    raw = keras_mixer.feature_extractor(model, as_grid=False)(images)
    assert tuple(raw[0].shape) == (2, 24, 8)


def test_drop_path_schedule_rises_linearly_to_the_rate():
    model = keras_mixer.MLPMixer(patch_size=4, hidden_dim=8, num_blocks=5, tokens_mlp_dim=4,
                                 channels_mlp_dim=8, input_shape=(8, 8, 3), drop_path_rate=0.2)
    rates = [model.get_layer(f"MixerBlock_{i}").drop_path_rate for i in range(5)]
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.15, 0.2])


def test_registry_names_and_errors():
    names = keras_mixer.list_models()
    assert {"mixer_s32", "mixer_b16", "mixer_h14"} <= set(names)
    model = keras_mixer.create_model("mixer_s32", input_shape=(64, 64, 3), classes=7)
    assert model.output_shape == (None, 7) and model.name == "mixer_s32"
    # timm's names, with the weights' tag after the dot or (before timm 0.9) in the name, are translated
    for name, refusal in [("mixer_z9", "unknown model 'mixer_z9'"),
                          ("Mixer_B16", "unknown model 'Mixer_B16'; did you mean mixer_b16\\?"),
                          ("mixer_b16_224", "'mixer_b16_224'; that is timm's name; here it is 'mixer_b16' "),
                          ("mixer_b16_224.goog_in21k_ft_in1k",
                           "here it is 'mixer_b16' with weights='goog_in21k_ft_in1k'"),
                          ("mixer_b16_224_miil", "here it is 'mixer_b16' with weights='miil_in21k_ft_in1k'"),
                          ("hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k",
                           "here it is 'mixer_b16' with weights='goog_in21k_ft_in1k'"),
                          ("mixer_b16_224.miil_in21k", "weights 'miil_in21k', which keras_mixer does not release; it "
                                                       "has goog_in21k")]:
        with pytest.raises(ValueError, match=refusal):
            keras_mixer.create_model(name)
    # timm's arguments are translated, where they were a TypeError naming MLPMixer's signature
    with pytest.raises(ValueError, match="not timm's: pretrained -> weights=\"imagenet\" .*; num_classes -> classes"):
        keras_mixer.create_model("mixer_s32", pretrained=True, num_classes=10)
