"""Logit parity with timm (the PyTorch reference) for timm checkpoints and the official .npz layout."""

import keras
import numpy as np
import pytest
import safetensors.torch
import torch

from families import outputs
import keras_mixer
from timm_reference import timm_logits, timm_mixer, to_official_npz_layout

TOLERANCE = 1e-5  # what the docs claim; measured 1e-6 to 3e-6 in float32


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, *size, 3)).astype("float32")


def assert_parity(ours, reference, x):
    delta = np.max(np.abs(outputs(ours, x) - timm_logits(reference, x)))
    print(f"max |delta| = {delta:.2e}")
    assert delta <= TOLERANCE


# (timm kwargs, our builder kwargs). Variants timm lacks (S/8, H/14) are built from MlpMixer's arguments.
VARIANTS = {
    "mixer_s32": (dict(name="mixer_s32_224"), {}),
    "mixer_b16": (dict(name="mixer_b16_224"), {}),
    "mixer_s16": (dict(name="mixer_s16_224"), {}),
    "mixer_b32": (dict(name="mixer_b32_224"), {}),
    "mixer_l32": (dict(name="mixer_l32_224"), {}),
    "mixer_l16": (dict(name="mixer_l16_224"), {}),
    "mixer_s8": (dict(patch_size=8, num_blocks=8, embed_dim=512), {}),
    "mixer_h14": (dict(patch_size=14, num_blocks=32, embed_dim=1280), {}),
}
FAST = ["mixer_s32", "mixer_b16"]
# the default run: the fast variants in both formats and one large case (208 M parameters), so the README's parity
# claim is exercised beyond the small models; the rest in the slow set
DEFAULT_RUN = {(v, suffix) for v in FAST for suffix in (".pth", ".safetensors")} | {("mixer_l16", ".safetensors")}


@pytest.mark.parametrize("variant, suffix", [
    pytest.param(v, suffix, marks=[] if (v, suffix) in DEFAULT_RUN else [pytest.mark.slow])
    for v in VARIANTS for suffix in (".pth", ".safetensors")])
def test_timm_checkpoint_parity(variant, suffix, tmp_path):
    timm_kwargs, _ = VARIANTS[variant]
    reference = timm_mixer(**timm_kwargs)
    path = tmp_path / f"model{suffix}"
    if suffix == ".pth":
        torch.save(reference.state_dict(), path)
    else:
        safetensors.torch.save_file(reference.state_dict(), path)
    ours = keras_mixer.create_model(variant, weights=str(path), classifier_activation=None)
    assert ours.get_layer("MixerBlock_0").gelu == "exact"  # the default follows the weights' origin
    assert_parity(ours, reference, images((224, 224), batch=1 if variant == "mixer_h14" else 2))
    del ours, reference
    keras.backend.clear_session()


def test_non_224_config_parity(tmp_path):
    reference = timm_mixer(img_size=(48, 64), patch_size=8, num_blocks=3, embed_dim=32, num_classes=7)
    torch.save(reference.state_dict(), tmp_path / "tiny.pth")
    ours = keras_mixer.MLPMixer(8, 32, 3, 16, 128, input_shape=(48, 64, 3), classes=7,
                                classifier_activation=None, weights=str(tmp_path / "tiny.pth"))
    assert_parity(ours, reference, images((48, 64)))


@pytest.mark.parametrize("variant", ["mixer_s32", pytest.param("mixer_b16", marks=pytest.mark.slow)])
def test_official_npz_layout_parity_with_tanh_gelu(variant, tmp_path):
    reference = timm_mixer(**VARIANTS[variant][0], act="tanh")
    np.savez(tmp_path / "official.npz", **to_official_npz_layout(reference.state_dict()))
    ours = keras_mixer.create_model(variant, weights=str(tmp_path / "official.npz"), classifier_activation=None)
    assert ours.get_layer("MixerBlock_0").gelu == "tanh"
    assert_parity(ours, reference, images((224, 224)))


def test_convert_cli_writes_an_equivalent_keras_model(tmp_path):
    from keras_mixer_cli import main

    reference = timm_mixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=16, num_classes=5, act="tanh")
    np.savez(tmp_path / "tiny.npz", **to_official_npz_layout(reference.state_dict()))
    assert main(["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "tiny.keras")]) == 0
    model = keras.models.load_model(tmp_path / "tiny.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 5)
    assert_parity(model, reference, images((32, 32)))
    assert main(["convert", str(tmp_path / "tiny.npz"), str(tmp_path / "tiny.txt")]) == 2


def test_convert_folds_the_normalization_of_a_miil_style_checkpoint(tmp_path, capsys):
    """A checkpoint trained on [0, 1] pixels (timm's MIIL Mixer): from a Hub snapshot's config.json, or from
    --mean/--std, the converted model fed preprocess_input's [-1, 1] gives timm's logits on [0, 1] pixels."""
    import json

    from safetensors.torch import save_file

    from keras_mixer_cli import main

    reference = timm_mixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=16, num_classes=5)
    (tmp_path / "hub").mkdir()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "hub" / "model.safetensors")
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    trained_on = timm_logits(reference, pixels / 255)  # MIIL's mean 0, std 1
    (tmp_path / "hub" / "config.json").write_text(json.dumps({"architecture": "mixer_b16_224", "pretrained_cfg": {
        "tag": "miil_in21k_ft_in1k", "mean": [0, 0, 0], "std": [1, 1, 1]}}))
    assert main(["convert", str(tmp_path / "hub" / "model.safetensors"), str(tmp_path / "hub.keras")]) == 0
    assert "trained on mean [0, 0, 0], std [1, 1, 1] (its config.json)" in capsys.readouterr().out
    (tmp_path / "hub" / "config.json").unlink()
    assert main(["convert", str(tmp_path / "hub" / "model.safetensors"), str(tmp_path / "flags.keras"),
                 "--mean", "0", "0", "0", "--std", "1", "1", "1"]) == 0
    assert main(["convert", str(tmp_path / "hub" / "model.safetensors"), str(tmp_path / "plain.keras")]) == 0
    for name in ("hub", "flags"):
        model = keras.models.load_model(tmp_path / f"{name}.keras")
        assert np.max(np.abs(outputs(model, pixels / 127.5 - 1) - trained_on)) <= TOLERANCE, name
    plain = keras.models.load_model(tmp_path / "plain.keras")  # taken for [-1, 1]: another function
    assert np.max(np.abs(outputs(plain, pixels / 127.5 - 1) - trained_on)) > 100 * TOLERANCE
    assert main(["convert", str(tmp_path / "hub" / "model.safetensors"), str(tmp_path / "x.keras"),
                 "--mean", "0", "0", "0"]) == 2
    assert "--mean and --std: give both" in capsys.readouterr().err and not (tmp_path / "x.keras").exists()


def test_our_weights_exported_to_timm_give_our_logits():
    from keras_mixer.models.mlp_mixer import official_to_timm

    ours = keras_mixer.MLPMixer(8, 32, 2, 16, 64, input_shape=(32, 32, 3), classes=7, gelu="exact",
                                classifier_activation=None)
    rng = np.random.default_rng(0)
    for variable in ours.weights:
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    reference = timm_mixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=(0.5, 2.0), num_classes=7)
    state_dict = official_to_timm({v.path: keras.ops.convert_to_numpy(v) for v in ours.weights})
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    assert_parity(ours, reference, images((32, 32)))
