from pathlib import Path

import keras
import numpy as np
import pytest

from families import outputs
import keras_mixer
from keras_mixer.errors import WeightsError
from keras_mixer.models.mlp_mixer import build_digits_mixer

TINY = dict(patch_size=4, hidden_dim=8, num_blocks=2, tokens_mlp_dim=6, channels_mlp_dim=12, input_shape=(16, 16, 3))


def randomized_model(**kwargs):
    model = keras_mixer.MLPMixer(**TINY, classes=5, **kwargs)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # the head is zero-initialized; make every weight count
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model


@pytest.fixture
def images():
    return np.random.default_rng(1).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")


def test_keras_file_round_trip_in_safe_mode_without_custom_objects(tmp_path, images):
    model = randomized_model(gelu="exact", drop_path_rate=0.1, dropout_rate=0.1)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(outputs(restored, images), outputs(model, images))
    assert restored.get_layer("MixerBlock_1").get_config() == model.get_layer("MixerBlock_1").get_config()


def test_weights_h5_round_trip_and_weights_argument(tmp_path, images):
    model = randomized_model()
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)
    fresh = keras_mixer.MLPMixer(**TINY, classes=5)
    assert not np.allclose(outputs(fresh, images), outputs(model, images))
    fresh.load_weights(path)
    np.testing.assert_array_equal(outputs(fresh, images), outputs(model, images))
    loaded = keras_mixer.MLPMixer(**TINY, classes=5, weights=str(path))
    np.testing.assert_array_equal(outputs(loaded, images), outputs(model, images))


def test_weights_into_wrong_shape_is_a_clear_error(tmp_path):
    """One line naming the first variable that does not fit and both its shapes (and the model a .keras file
    holds): Keras' own message listed every layer and printed whole arrays, pages of it on the command line."""
    path = tmp_path / "m.weights.h5"
    randomized_model().save_weights(path)
    with pytest.raises(WeightsError, match=r"^could not load .*m.weights.h5 into 'mlp_mixer': 1 of its layers do "
                                           r"not fit, the first head/kernel: \(\d+, 7\) in the model, \(\d+, 5\) in "
                                           r"the file$"):
        keras_mixer.MLPMixer(**TINY, classes=7, weights=str(path))
    path = tmp_path / "digits.keras"
    build_digits_mixer().save(path)
    with pytest.raises(WeightsError, match=r"^could not load .*digits.keras into 'mixer_s32': the file holds "
                                           r"'mixer_digits'; \d+ of its layers do not fit, the first stem/kernel: "
                                           r"\(32, 32, 3, 512\) in the model, \(4, 4, 3, 64\) in the file$"):
        keras_mixer.MixerS32(weights=str(path))


@pytest.mark.parametrize("weights, message", [("imagenet21k", "no pretrained weights"), ("missing.weights.h5", "not found")])
def test_unavailable_weights_are_a_clear_error(weights, message):
    with pytest.raises(WeightsError, match=message):
        keras_mixer.MixerS32(weights=weights)


EARLIER_FILES = Path(__file__).parent / "data" / "saved_8201816"


@pytest.mark.parametrize("name", ["mixer", "mixer_qat", "as_mlp", "hire_mlp", "vip", "raft_mlp", "sparse_mlp"])
def test_files_written_by_an_earlier_version_still_load_and_compute_the_same(name):
    """`.keras` files that commit 8201816 wrote (tests/data/saved_8201816/make_files.py), before the layer rename, the
    registry's naming rule and the export refactors: plain Keras loads each after `import keras_mixer`, safe mode,
    and it gives the outputs it gave then."""
    model = keras.models.load_model(EARLIER_FILES / f"{name}.keras")
    inputs = np.load(EARLIER_FILES / "inputs.npy")
    expected = np.load(EARLIER_FILES / f"{name}_outputs.npy")
    assert np.ptp(expected, axis=-1).min() > 1e-3  # the heads were given values: not every class alike
    np.testing.assert_allclose(outputs(model, inputs), expected, atol=1e-5)
