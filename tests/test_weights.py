"""Checkpoint reading errors, head/resolution adaptation, released-weights registry and downloads."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest
import torch

from families import outputs
import keras_mixer
from keras_mixer.errors import WeightsError
from keras_mixer.layers.input_normalization import IMAGENET_DEFAULT, UNIT_RANGE, fold_into_stem
from keras_mixer.weights import fetch, resolve
from mixer_reference import mixer_forward, random_params

TINY = dict(patch_size=4, hidden_dim=8, num_blocks=2, tokens_mlp_dim=6, channels_mlp_dim=12)


def tiny_params(tokens=4, classes=5, seed=0):
    return random_params(np.random.default_rng(seed), 4, 3, 8, tokens, 6, 12, 2, classes)


def tiny(size=8, **kwargs):
    return keras_mixer.MLPMixer(**{**TINY, **kwargs.pop("config", {})}, input_shape=(size, size, 3),
                                classifier_activation=None, **kwargs)


def logits(model, x):
    return keras.ops.convert_to_numpy(model(x))


@pytest.fixture
def npz(tmp_path):
    def write(params, name="w.npz"):
        path = tmp_path / name
        np.savez(path, **params)
        return str(path)
    return write


# --- malformed checkpoints: a clear error naming what is wrong --------------------------------------------------

def test_missing_key(npz):
    params = tiny_params()
    del params["MixerBlock_1/LayerNorm_1/bias"]
    with pytest.raises(WeightsError, match=r"missing keys \['MixerBlock_1/LayerNorm_1/bias'\]"):
        tiny(classes=5, weights=npz(params))


def test_extra_key(npz):
    params = {**tiny_params(), "MixerBlock_2/LayerNorm_0/scale": np.ones(8, "float32")}
    with pytest.raises(WeightsError, match=r"unexpected keys \['MixerBlock_2/LayerNorm_0/scale'\]"):
        tiny(classes=5, weights=npz(params))


def test_wrong_shape_names_key_and_shapes(npz):
    params = tiny_params()
    params["MixerBlock_0/channel_mixing/Dense_0/kernel"] = np.zeros((8, 13), "float32")
    with pytest.raises(WeightsError, match=r"'MixerBlock_0/channel_mixing/Dense_0/kernel' has shape \(8, 13\), "
                                           r"the model expects \(8, 12\)"):
        tiny(classes=5, weights=npz(params))


def test_wrong_dtype(npz):
    params = tiny_params()
    params["stem/bias"] = np.zeros(8, "int32")
    with pytest.raises(WeightsError, match=r"'stem/bias' has dtype int32"):
        tiny(classes=5, weights=npz(params))


def test_nan_weights_are_refused(npz):
    params = tiny_params()
    params["head/bias"][0] = np.nan
    with pytest.raises(WeightsError, match="'head/bias' contains NaN"):
        tiny(classes=5, weights=npz(params))


def test_not_a_mixer_checkpoint(npz):
    with pytest.raises(WeightsError, match="not an MLP-Mixer checkpoint"):
        tiny(classes=5, weights=npz({"conv1/kernel": np.zeros(3, "float32")}))


@pytest.mark.parametrize("suffix", [".npz", ".pth", ".safetensors"])
def test_truncated_files(tmp_path, suffix):
    import safetensors.torch

    state = {"stem.proj.weight": torch.zeros(8, 3, 4, 4)}
    full = tmp_path / f"full{suffix}"
    if suffix == ".npz":
        np.savez(full, **tiny_params())
    elif suffix == ".pth":
        torch.save(state, full)
    else:
        safetensors.torch.save_file(state, full)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cut"):
        tiny(classes=5, weights=str(cut))


def test_pickle_inside_npz_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, **{"stem/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(WeightsError, match="refusing to load pickled data"):
        tiny(classes=5, weights=str(path))


def test_a_file_that_is_not_a_zip_archive_is_named_as_such_not_as_a_pickle(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("not an archive")  # numpy reads what is not a zip as a pickle, and refuses it as one
    with pytest.raises(WeightsError, match=r"notes.npz: not an .npz archive \(not a zip file"):
        tiny(classes=5, weights=str(path))


def test_a_tflite_file_given_as_a_keras_model_is_named_as_such(tmp_path):
    from keras_mixer.weights import load_keras_model

    path = tmp_path / "m.tflite"
    path.write_bytes(b"\0" * 8)
    with pytest.raises(WeightsError, match=r"m.tflite: a .tflite file, not a .keras model \(LiteRT runs it"):
        load_keras_model(path)


@pytest.mark.parametrize("crop_fraction, kept", [(0.875, True), (1, True), (True, False), (0, False),
                                                  (float("nan"), False)])
def test_a_models_stored_crop_fraction_must_be_a_fraction(tmp_path, crop_fraction, kept):
    """The evaluation crop stored in a `.keras` file (keras_mixer.json): JSON's `true` read as a crop of 1 (Python
    counts True as 1), so a damaged file evaluated at another crop than it was trained for."""
    import json
    import zipfile

    from keras_mixer.weights import read_model_info
    from keras_mixer.weights.model_file import INFO_ENTRY

    path = tmp_path / "m.keras"
    tiny(classes=5).save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(INFO_ENTRY, json.dumps({"crop_fraction": crop_fraction}))
    if kept:
        assert read_model_info(path) == {"crop_fraction": crop_fraction}
    else:
        with pytest.raises(WeightsError, match=f"m.keras: malformed {INFO_ENTRY}"):
            read_model_info(path)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pth_with_code_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"stem.proj.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(WeightsError, match="refusing to unpickle"):
        tiny(classes=5, weights=str(path))


def test_a_whole_pickled_model_is_refused_in_one_line_naming_its_class(tmp_path):
    """`torch.save(model)` instead of its state_dict: torch's refusal was a page with terminal escapes, advising
    weights_only=False."""
    path = tmp_path / "whole.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(WeightsError) as refused:
        tiny(classes=5, weights=str(path))
    assert str(refused.value) == (f"{path}: holds a pickled torch.nn.modules.linear.Linear, not only tensors; refusing "
                                  "to unpickle it (it could run code): save the weights alone, "
                                  "torch.save(model.state_dict(), path) or safetensors")


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(WeightsError, match=r"no pretrained weights .*w\.txt' for mixer_s32.*must end in \.npz"):
        keras_mixer.MixerS32(weights=str(tmp_path / "w.txt"))
    with pytest.raises(WeightsError, match="not found"):
        tiny(classes=5, weights=str(tmp_path / "w.npz"))


# --- head and token count ----------------------------------------------------------------------------------------

def test_other_class_count_loads_all_but_the_head(npz):
    params = tiny_params(classes=5)
    with pytest.warns(UserWarning, match="5-class head, the model 3"):
        model = tiny(classes=3, weights=npz(params))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("stem").kernel), params["stem/kernel"])
    backbone = tiny(include_top=False, weights=npz(params))  # silently skips the head
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 3)).astype("float32")
    expected = mixer_forward(params, x, 4, 2, "tanh", include_head=False).reshape(2, 2, 2, 8)
    assert np.max(np.abs(logits(backbone, x) - expected)) < 1e-5


def test_other_token_count_needs_an_explicit_choice(npz):
    with pytest.raises(WeightsError, match="block_diagonal.*interpolate"):
        tiny(size=16, classes=5, weights=npz(tiny_params()))


def test_block_diagonal_resize_tiles_the_pretrained_model(npz):
    """Property of the paper's construction with our contiguous-tile groups: on an image made of four 8x8 tiles,
    the 16x16 model computes the 8x8 model on each tile independently, so (the head being linear after the mean)
    its logits are the mean of the four tiles' logits, and its features are the tiles' features side by side."""
    params = tiny_params(tokens=4)
    small = tiny(classes=5, weights=npz(params))
    large = tiny(size=16, classes=5, weights=npz(params), token_mixing_resize="block_diagonal")
    assert large.get_layer("MixerBlock_0").tokens_mlp_dim == 4 * 6
    tiles = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype("float32")
    image = np.concatenate(
        [np.concatenate([tiles[0], tiles[1]], axis=1), np.concatenate([tiles[2], tiles[3]], axis=1)], axis=0
    )[None]
    np.testing.assert_allclose(logits(large, image)[0], logits(small, tiles).mean(0), atol=1e-5)
    same = np.tile(tiles[:1], (1, 2, 2, 1))
    np.testing.assert_allclose(logits(large, same), logits(small, tiles[:1]), atol=1e-5)
    grid_large = logits(keras_mixer.feature_extractor(large), image)
    grid_small = logits(keras_mixer.feature_extractor(small), tiles)
    np.testing.assert_allclose(grid_large[-1][0, :2, 2:], grid_small[-1][1], atol=1e-5)  # top-right tile


def test_block_diagonal_needs_an_integer_multiple(npz):
    with pytest.raises(WeightsError, match="integer multiple"):
        tiny(size=12, classes=5, weights=npz(tiny_params()), token_mixing_resize="block_diagonal")


@pytest.mark.parametrize("size", [4, 16])
def test_interpolate_resize_to_smaller_and_larger_grids(npz, size):
    model = tiny(size=size, classes=5, weights=npz(tiny_params(tokens=4)), token_mixing_resize="interpolate")
    assert model.get_layer("MixerBlock_1").token_mixing.dense_0.kernel.shape == ((size // 4) ** 2, 6)


def test_interpolate_2x_preserves_the_response_to_constant_tokens():
    """Bilinear 2x upsampling (half-pixel centres) keeps each row's mean, so with W1 rescaled by S_old/S_new a
    constant token sequence gives the same hidden units, and the output tokens keep their mean."""
    from keras_mixer.weights.token_resize import interpolate

    rng = np.random.default_rng(0)
    w1, b1, w2, b2 = rng.normal(size=(9, 5)), rng.normal(size=5), rng.normal(size=(5, 9)), rng.normal(size=9)
    n1, nb1, n2, nb2 = interpolate(w1, b1, w2, b2, (3, 3), (6, 6))
    assert n1.shape == (36, 5) and n2.shape == (5, 36) and nb2.shape == (36,)
    hidden_old, hidden_new = np.ones(9) @ w1 + b1, np.ones(36) @ n1 + nb1
    np.testing.assert_allclose(hidden_new, hidden_old, atol=1e-5)  # resampled in float32
    np.testing.assert_allclose((hidden_new @ n2 + nb2).mean(), (hidden_old @ w2 + b2).mean(), atol=1e-5)


@pytest.mark.parametrize("normalization", [UNIT_RANGE, IMAGENET_DEFAULT])
def test_a_checkpoints_normalization_folds_into_the_stem(normalization):
    """Our z = pixels / 127.5 - 1 into the folded stem == the checkpoint's (pixels / 255 - mean) / std into its own."""
    params = tiny_params()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("float64")
    mean, std = (np.asarray(v) for v in normalization)
    folded = dict(params)
    folded["stem/kernel"], folded["stem/bias"] = fold_into_stem(params["stem/kernel"], params["stem/bias"],
                                                                normalization)
    np.testing.assert_allclose(mixer_forward(folded, pixels / 127.5 - 1, 4, 2, "exact"),
                               mixer_forward(params, (pixels / 255 - mean) / std, 4, 2, "exact"), atol=1e-4)


def test_a_checkpoint_takes_the_normalization_of_the_timm_config_beside_it(tmp_path, npz):
    """A Hugging Face Hub snapshot of a timm model holds config.json beside the weights: its `pretrained_cfg` says
    which pixels the checkpoint was trained on (a MIIL Mixer: [0, 1]; ImageNet's mean/std here). Read by path
    alone, such a file was taken for [-1, 1]: a silently different model."""
    params = tiny_params()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("float64")
    mean, std = (np.asarray(v) for v in IMAGENET_DEFAULT)
    (tmp_path / "hub").mkdir()
    in_hub = npz(params, "hub/model.npz")
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"architecture": "mixer_tiny", "pretrained_cfg": {
        "mean": list(mean), "std": list(std), "crop_pct": 0.875}}))
    trained_on = mixer_forward(params, (pixels / 255 - mean) / std, 4, 2, "tanh")
    np.testing.assert_allclose(logits(tiny(classes=5, weights=in_hub), pixels / 127.5 - 1), trained_on, atol=1e-4)
    alone = npz(params, "alone.npz")  # no config.json: the official layout's [-1, 1]
    assert np.abs(logits(tiny(classes=5, weights=alone), pixels / 127.5 - 1) - trained_on).max() > 1e-2
    (tmp_path / "hub" / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match=r"config.json: beside .*model.npz but not readable JSON"):
        tiny(classes=5, weights=in_hub)
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"model_type": "bert"}))  # another library's
    np.testing.assert_allclose(logits(tiny(classes=5, weights=in_hub), pixels / 127.5 - 1),
                               mixer_forward(params, pixels / 127.5 - 1, 4, 2, "tanh"), atol=1e-4)


def test_a_snapshot_folder_given_as_weights_names_the_checkpoint_inside(tmp_path, npz, monkeypatch):
    """A Hugging Face Hub snapshot's folder given where its checkpoint file belongs was "no pretrained weights
    'snap'" (weights=) and "not one of them" (convert)."""
    from keras_mixer.models.mlp_mixer import convert_checkpoint

    (tmp_path / "snap").mkdir()
    npz(tiny_params(), "snap/model.npz")
    (tmp_path / "snap" / "README.md").write_text("model card")
    inside = f"{tmp_path / 'snap'} is a folder, not a {{}}; give one of its files: {tmp_path / 'snap' / 'model.npz'}"
    with pytest.raises(WeightsError) as refused:
        tiny(classes=5, weights=str(tmp_path / "snap"))
    assert str(refused.value) == inside.format("weights file")
    with pytest.raises(WeightsError) as refused:
        convert_checkpoint(str(tmp_path / "snap"), tmp_path / "m.keras")
    assert str(refused.value) == inside.format("checkpoint file") and not (tmp_path / "m.keras").exists()
    # a release's tag stays the release where a folder of that name is at hand (an "imagenet/" of data)
    (tmp_path / "imagenet").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve("mixer_s32", "imagenet") == resolve("mixer_s32", resolve("mixer_s32", "imagenet").tag)


# --- released weights and downloads -----------------------------------------------------------------------------

def test_registry_tags_and_alias():
    assert resolve("mixer_b16", "imagenet").tag == "miil_in21k_ft_in1k"
    assert resolve("mixer_l16", "imagenet21k").classes == 21843
    assert resolve("mixer_s8", "gsam").url.endswith("/gsam/Mixer-S_8.npz")
    assert "imagenet" in keras_mixer.list_pretrained("mixer_s32")
    with pytest.raises(WeightsError, match="no pretrained weights 'sam' for mixer_l16; available: goog_in21k, goog_in21k_ft_in1k, imagenet1k, imagenet21k, imagenet;"):
        resolve("mixer_l16", "sam")
    with pytest.raises(WeightsError, match="matches no released variant"):
        tiny(classes=5, weights="imagenet")


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_with_full_and_prefix_hashes(tmp_path):
    release = tmp_path / "release.bin"
    release.write_bytes(os.urandom(1000))
    url, digest = release.as_uri(), sha256(release)
    cache = tmp_path / "cache"
    path = fetch("a.bin", url, digest, cache_dir=str(cache))
    assert open(path, "rb").read() == release.read_bytes()
    assert fetch("b.bin", url, digest[:8], cache_dir=str(cache))
    with pytest.raises(WeightsError, match="does not match the published hash 00000000"):
        fetch("c.bin", url, "00000000", cache_dir=str(cache))
    assert not (cache / "keras_mixer" / "c.bin").exists()  # a bad download is not kept


@pytest.mark.parametrize("hash_length", [64, 8])
def test_corrupt_cache_entry_is_fetched_again(tmp_path, hash_length):
    release = tmp_path / "release.bin"
    release.write_bytes(os.urandom(1000))
    cache = tmp_path / "cache"
    path = fetch("a.bin", release.as_uri(), sha256(release)[:hash_length], cache_dir=str(cache))
    assert path.startswith(str(cache))
    with open(path, "r+b") as f:
        f.write(b"corrupt")
    path = fetch("a.bin", release.as_uri(), sha256(release)[:hash_length], cache_dir=str(cache))
    assert open(path, "rb").read() == release.read_bytes()


def test_offline_error_says_where_to_put_the_file(tmp_path):
    missing = (tmp_path / "nowhere.npz").as_uri()
    with pytest.raises(WeightsError, match=r"Put x\.npz into .*offline"):
        fetch("x.npz", missing, None, weights_dir=str(tmp_path / "offline"), cache_dir=str(tmp_path / "c"))


def test_named_weights_from_the_offline_directory(tmp_path, monkeypatch):
    """weights='gsam' for Mixer-S/32 read from $KERAS_MIXER_WEIGHTS_DIR: a full-size official-layout file."""
    rng = np.random.default_rng(0)
    params = random_params(rng, 32, 3, 512, 49, 256, 2048, 8, 1000)
    offline = tmp_path / "offline"
    offline.mkdir()
    np.savez(offline / resolve("mixer_s32", "gsam").filename, **params)
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(offline))
    with pytest.warns(UserWarning, match="no published hash"):
        model = keras_mixer.MixerS32(weights="imagenet", classifier_activation=None)
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    expected = mixer_forward(params, x, 32, 8, "tanh")
    assert np.max(np.abs(outputs(model, x) - expected)) < 1e-4


def test_a_release_with_another_head_builds_with_its_own_classes(tmp_path, monkeypatch):
    """A 21k release (7 classes here, to keep the file small) without `classes` gets its own head, as timm's
    pretrained configs give it; it was a new 1000-class head of initial weights, with a warning."""
    import dataclasses

    from keras_mixer.weights.pretrained import PRETRAINED

    release = dataclasses.replace(resolve("mixer_s32", "gsam"), tag="seven", file_hash=None, classes=7)
    monkeypatch.setitem(PRETRAINED, ("mixer_s32", "seven"), release)
    rng = np.random.default_rng(1)
    params = random_params(rng, 32, 3, 512, 49, 256, 2048, 8, 7)
    np.savez(tmp_path / release.filename, **params)
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="no published hash") as warned:
        model = keras_mixer.create_model("mixer_s32", weights="seven", classifier_activation=None)
    assert not [w for w in warned if "class head" in str(w.message)] and model.output_shape == (None, 7)
    x = rng.uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    assert np.max(np.abs(outputs(model, x) - mixer_forward(params, x, 32, 8, "tanh"))) < 1e-4
    with pytest.warns(UserWarning) as warned:  # fine-tuning: asked for, and said
        assert keras_mixer.create_model("mixer_s32", weights="seven", classes=3).output_shape == (None, 3)
    assert [w for w in warned if "has a 7-class head, the model 3" in str(w.message)]
