"""keras.applications' conventions over every family's constructor: a port of the checks in Keras' own
`keras/src/applications/applications_test.py` and `imagenet_utils_test.py` (default build, pooling, classifier
activation, input_tensor, custom sizes and channels, argument errors, preprocess / decode), plus what a global
channels-first setting must not change, and each checkpoint's normalization carried through saving and export."""

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_mixer
from keras_mixer.errors import KerasMixerError
from hire_mlp_reference import random_state_dict as hire_state_dict
from reference_ops import authors_normalize, random_pixels
from families import SMALL, outputs, with_nonzero_weights

# builder: (features of the last stage, a custom input size the family takes)
FAMILIES = {
    "MixerS32": (512, 64),
    "SparseMLPSmall": (512, 64),
    "ASMLPTiny": (768, 64),
    "HireMLPTiny": (512, 123),
    "VisionPermutatorSmall14": (384, 224),  # its permute MLPs are sized by the grid: 224 only
    "RaftMLPSmall": (512, 64),
}


@pytest.fixture(params=["channels_last", "channels_first"])
def data_format(request):
    """Keras' tests run each check under both global settings; our models are NHWC under either."""
    keras.config.set_image_data_format(request.param)
    yield request.param
    keras.config.set_image_data_format("channels_last")


@pytest.mark.parametrize("builder", FAMILIES)
def test_default_build_and_classifier_activation(builder, data_format):
    model = getattr(keras_mixer, builder)()
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert model.layers[-1].activation.__name__ == "softmax"
    assert getattr(keras_mixer, builder)(classifier_activation=None).layers[-1].activation.__name__ == "linear"


@pytest.mark.parametrize("builder", FAMILIES)
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_pooling(builder, pooling, data_format):
    model = getattr(keras_mixer, builder)(include_top=False, pooling=pooling)
    assert list(model.outputs[0].shape) == [None, FAMILIES[builder][0]]


@pytest.mark.parametrize("builder", FAMILIES)
def test_custom_input_size_and_channels(builder):
    last_dim, size = FAMILIES[builder]
    for channels in (1, 4):
        model = getattr(keras_mixer, builder)(include_top=False, input_shape=(size, size, channels))
        assert model.outputs[0].shape[-1] == last_dim


@pytest.mark.parametrize("builder", FAMILIES)
def test_input_tensor(builder):
    """As Keras' test: a 4-channel input halved by a stride-2 conv to 3 channels feeds the model."""
    size = FAMILIES[builder][1] * 2
    inputs = keras.Input((size, size, 4), name="custom_input")
    x = keras.layers.Conv2D(3, 2, strides=2)(inputs)
    model = getattr(keras_mixer, builder)(include_top=False, pooling="avg", input_tensor=x)
    assert model.inputs[0].shape == (None, size, size, 4) and list(model.outputs[0].shape) == [None, FAMILIES[builder][0]]


@pytest.mark.parametrize("builder", FAMILIES)
def test_argument_errors_are_clear(builder):
    build = getattr(keras_mixer, builder)
    for shape, message in [((None, None, 3), "static height, width"), ((64, 64), r"\(height, width, channels\)")]:
        with pytest.raises(ValueError, match=message):
            build(input_shape=shape)
    with pytest.raises(ValueError, match="pooling must be one of"):
        build(include_top=False, pooling="sum")
    with pytest.raises(ValueError, match="Only None and 'softmax' activations"):  # checked before any file is read
        build(weights="some_file.weights.h5", classifier_activation="sigmoid")
    # named as the caller wrote them: Keras would say `units=0`, or a later block's own drop-path rate
    for arguments, message in [(dict(classes=0), "classes must be a whole number >= 1 .*got 0"),
                               (dict(classes="10"), "classes must be .*got '10'"),
                               (dict(drop_path_rate=2.0), r"drop_path_rate must be .* \[0, 1\), got 2.0"),
                               (dict(drop_path_rate=float("nan")), "drop_path_rate must be .*got nan")]:
        with pytest.raises(KerasMixerError, match=message):
            build(**arguments)
    build(include_top=False, classes=0)  # no head: classes is not read, as in keras.applications


@pytest.mark.parametrize("family", SMALL)
def test_channels_first_setting_builds_the_same_model(family):
    """The issue's failure: under channels_first the Mixer pooled over channels and sized its head by tokens."""
    reference = with_nonzero_weights(SMALL[family]())
    x = np.random.default_rng(0).uniform(-1, 1, (2, *reference.input_shape[1:])).astype("float32")
    keras.config.set_image_data_format("channels_first")
    try:
        model = SMALL[family]()
        assert [tuple(v.shape) for v in model.weights] == [tuple(v.shape) for v in reference.weights]
        model.set_weights(reference.get_weights())
        np.testing.assert_array_equal(outputs(model, x), outputs(reference, x))
        features = keras_mixer.MixerS32(include_top=False, pooling="avg")
        assert list(features.outputs[0].shape) == [None, 512]
    finally:
        keras.config.set_image_data_format("channels_last")


def test_preprocess_input_as_keras():
    x = np.random.default_rng(0).uniform(0, 255, (2, 10, 10, 3))
    for data_format in (None, "channels_last"):
        np.testing.assert_allclose(keras_mixer.preprocess_input(x, data_format=data_format), x / 127.5 - 1,
                                   atol=1e-6)  # float32
    first = keras_mixer.preprocess_input(x.transpose(0, 3, 1, 2), "channels_first")
    np.testing.assert_allclose(first.transpose(0, 2, 3, 1), keras_mixer.preprocess_input(x), rtol=1e-6)
    assert keras_mixer.preprocess_input(x.astype("int32")).shape == x.shape
    with pytest.raises(ValueError, match="data_format"):
        keras_mixer.preprocess_input(x, data_format="nhwc")


def test_decode_predictions_uses_keras_label_text():
    """Keras' test asserts 'African_elephant' in the top 3; names as in Keras' imagenet_class_index.json (copied:
    the first lemma with underscores, duplicates kept: two 'crane' and two 'maillot' classes)."""
    keras_names = {0: "tench", 2: "great_white_shark", 25: "European_fire_salamander", 134: "crane",
                   282: "tiger_cat", 386: "African_elephant", 517: "crane", 638: "maillot", 639: "maillot"}
    preds = np.zeros((1, 1000), "float32")
    for rank, index in enumerate(keras_names):
        preds[0, index] = 1.0 - rank / 100
    decoded = keras_mixer.decode_predictions(preds, top=len(keras_names))[0]
    assert [(name, round(score, 2)) for _, name, score in decoded] == [
        (name, round(1.0 - rank / 100, 2)) for rank, name in enumerate(keras_names.values())]
    assert decoded[0][0] == "n01440764"  # tench's synset


def test_lookups_refuse_what_they_would_answer_wrongly():
    """Each gave an answer: a negative top listed all classes but |top| (Keras' slicing), NaN scores were ranked,
    an unknown variant had "no releases" ([]), a file path failed with an AttributeError."""
    preds = np.random.default_rng(0).random((1, 1000))
    with pytest.raises(KerasMixerError, match="top must be a whole number >= 0, got -1"):
        keras_mixer.decode_predictions(preds, top=-1)
    with pytest.raises(KerasMixerError, match="the predictions hold NaN"):
        keras_mixer.decode_predictions(np.where(preds > 0.5, np.nan, preds))
    with pytest.raises(KerasMixerError, match=r"num_classes must be a whole number \(1000 or 21843\), got '1000'"):
        keras_mixer.imagenet_labels("1000")
    assert keras_mixer.list_pretrained("as_mlp_t") == [] and "gsam" in keras_mixer.list_pretrained("mixer_s32")
    with pytest.raises(KerasMixerError, match="unknown model 'mixer_b17'; did you mean mixer_b16"):
        keras_mixer.list_pretrained("mixer_b17")
    with pytest.raises(KerasMixerError, match="feature_extractor takes a keras.Model, got str 'm.keras': load a "
                                              ".keras file with keras.models.load_model first"):
        keras_mixer.feature_extractor("m.keras")


def test_list_models_chooses_as_timms_does():
    """timm's `list_models("*b16*")`, `pretrained=True` and `exclude_filters` were a TypeError here."""
    assert keras_mixer.list_models("*b16*") == keras_mixer.list_models("*B16*") == ["mixer_b16"]
    assert keras_mixer.list_models(["mixer_s*", "vip_*"], exclude_filters=["*32", "*7"]) == [
        "mixer_s16", "mixer_s8", "vip_edgetpu", "vip_small14"]
    with_releases = [name for name in keras_mixer.list_models() if keras_mixer.list_pretrained(name)]
    assert keras_mixer.list_models(pretrained=True) == with_releases
    assert "hire_mlp_tiny" in with_releases and "as_mlp_tiny" not in with_releases
    assert keras_mixer.list_models("mixer") == []  # fnmatch's rules, as timm's: no wildcard, no partial match
    with pytest.raises(KerasMixerError, match="list_models' filter must be a wildcard pattern like '\\*b16\\*' "
                                              "or a list of them, got True"):
        keras_mixer.list_models(True)


# --- a checkpoint's own normalization, inside the model ------------------------------------------------------------

HIRE = dict(layers=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), pixel=(4, 3, 3, 2), step_stride=(2, 2, 3, 2),
            step_dilation=(2, 2, 1, 1))


@pytest.fixture(scope="module")
def authors_hire_mlp(tmp_path_factory):
    """A Hire-MLP from an authors'-format checkpoint: its stem pads, so the normalization is an explicit step."""
    state = hire_state_dict(np.random.default_rng(0), HIRE["layers"], HIRE["embed_dims"], HIRE["pixel"], 10)
    path = tmp_path_factory.mktemp("hire") / "authors.safetensors"
    save_file(state, str(path))
    model = keras_mixer.HireMLP(**HIRE, input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                                weights=str(path))
    return model, str(path)


def test_normalization_step_survives_saving(authors_hire_mlp, tmp_path):
    model, _ = authors_hire_mlp
    assert model.get_layer("input_normalization").get_config()["std"] == [0.229, 0.224, 0.225]
    x = keras_mixer.preprocess_input(random_pixels((2, 32, 32, 3)))
    model.save(tmp_path / "hire.keras")
    reloaded = keras.models.load_model(tmp_path / "hire.keras")
    np.testing.assert_array_equal(outputs(reloaded, x), outputs(model, x))


def test_normalization_step_in_the_edgetpu_form_and_the_tflite_metadata(authors_hire_mlp, tmp_path):
    from keras_mixer.export import load_interpreter, predict, read_metadata, to_tflite
    from keras_mixer.export.edgetpu_model import edgetpu_model

    model, _ = authors_hire_mlp
    x = keras_mixer.preprocess_input(random_pixels((2, 32, 32, 3)))
    expected = outputs(model, x)
    np.testing.assert_allclose(edgetpu_model(model, gelu=None).predict(x, batch_size=1, verbose=0), expected,
                               atol=1e-4)
    path = to_tflite(model, tmp_path / "hire.tflite", quantization="float32")
    np.testing.assert_allclose(predict(load_interpreter(path), x), expected, atol=1e-4)
    assert "mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)" in read_metadata(path)["description"]


def test_checkpoint_normalization_override_and_refusals(authors_hire_mlp):
    _, path = authors_hire_mlp
    pixels = random_pixels((1, 32, 32, 3))
    zero_one = keras_mixer.HireMLP(**HIRE, input_shape=(32, 32, 3), classes=10, classifier_activation=None,
                                   weights=path, checkpoint_normalization=((0, 0, 0), (1, 1, 1)))
    unit = keras_mixer.HireMLP(**HIRE, input_shape=(32, 32, 3), classes=10, classifier_activation=None)
    unit.set_weights(zero_one.get_weights())  # no normalization step: fed the [0, 1] pixels directly
    np.testing.assert_allclose(outputs(zero_one, keras_mixer.preprocess_input(pixels)),
                               outputs(unit, authors_normalize(pixels, (0, 0, 0), (1, 1, 1))), atol=1e-5)
    with pytest.raises(ValueError, match="checkpoint_normalization describes a checkpoint"):
        keras_mixer.HireMLP(**HIRE, input_shape=(32, 32, 3), checkpoint_normalization=((0, 0, 0), (1, 1, 1)))
    with pytest.raises(ValueError, match="3 means and 3 stds"):
        keras_mixer.HireMLP(**HIRE, input_shape=(32, 32, 3), weights=path, checkpoint_normalization=((0,), (1,)))


@pytest.mark.parametrize("family", SMALL)
def test_feature_extractor_serves_every_family(family):
    """Every block's output, NHWC, for every family (the Mixer's tokens as their patch grid)."""
    model = with_nonzero_weights(SMALL[family]())
    blocks = [layer for layer in model.layers if type(layer).__name__.endswith("Block")]
    features = keras_mixer.feature_extractor(model)
    assert len(features.outputs) == len(blocks) > 0 and all(len(out.shape) == 4 for out in features.outputs)
    x = np.random.default_rng(0).uniform(-1, 1, (1, *model.input_shape[1:])).astype("float32")
    last = keras.ops.convert_to_numpy(features(x)[-1])
    expected = keras.Model(model.input, blocks[-1].output)(x)
    np.testing.assert_allclose(last.reshape(expected.shape), keras.ops.convert_to_numpy(expected), atol=1e-6)


# the short prefix of each family's registry names, by builder prefix
FAMILY_PREFIXES = {"Mixer": "mixer_", "ASMLP": "as_mlp_", "HireMLP": "hire_mlp_", "VisionPermutator": "vip_",
                   "RaftMLP": "raft_mlp_", "SparseMLP": "sparse_mlp_"}


def test_one_naming_rule_for_registry_names_and_builders():
    """A variant's registry name is its builder's name with the family's short prefix, in lower case
    (`MixerB16`: mixer_b16, `VisionPermutatorSmall14`: vip_small14); the names registered before the rule still
    build the same variant, and `list_models` lists only the rule's names."""
    from keras_mixer.models.registry import _ALIASES, _BUILDERS

    for name, builder in _BUILDERS.items():
        family = next(prefix for prefix in FAMILY_PREFIXES if builder.__name__.startswith(prefix))
        assert name == FAMILY_PREFIXES[family] + builder.__name__[len(family):].lower(), (name, builder.__name__)
        assert getattr(keras_mixer, builder.__name__) is builder
    assert keras_mixer.list_models() == sorted(_BUILDERS)
    former = {"as_mlp_t": "as_mlp_tiny", "vip_s14": "vip_small14", "raft_mlp_s": "raft_mlp_small",
              "sparse_mlp_s": "sparse_mlp_small"}
    for old, new in former.items():
        assert _ALIASES[old] == new and old not in keras_mixer.list_models()
    model = keras_mixer.create_model("raft_mlp_s", input_shape=(32, 32, 3), classes=10)
    assert model.name == "raft_mlp_small"
    assert model.count_params() == keras_mixer.RaftMLPSmall(input_shape=(32, 32, 3), classes=10).count_params()


@pytest.mark.parametrize("arguments, message", [
    (dict(input_shape=(224, 224, 0)), r"every size must be at least 1"),
    (dict(input_shape=(3, 224, 224)), r"looks channels-first.*\(224, 224, 3\)"),
    (dict(input_shape=(64, 64, 3), input_tensor=keras.Input((32, 32, 3))), r"input_tensor has shape \(32, 32, 3\) "
                                                                             r"but input_shape is \(64, 64, 3\)"),
    (dict(dropout_rate=-0.5), r"dropout_rate must be a number in \[0, 1\), got -0.5"),
], ids=["zero channels", "channels first", "conflicting input_tensor", "negative dropout"])
def test_careless_input_shapes_are_refused_by_name(arguments, message):
    with pytest.raises(KerasMixerError, match=message):
        keras_mixer.MixerS32(**arguments)
