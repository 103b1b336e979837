"""Every family through the same checks (`families.FAMILIES`): parameter counts at the released sizes, the authors'
checkpoint format from pixels against their forward pass, checkpoint errors that name the key, the pieces of its
blocks that the Edge TPU rewrite reads by name, and that the row's other small models hold the family's layers. Each family's
own file tests its layers; the digits training, export and Edge TPU checks every family gets are in
`digits_helpers.digits_family_tests` and `test_edgetpu_forms.py`."""

import gc

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_mixer
from families import FAMILIES, outputs
from keras_mixer.errors import WeightsError
from keras_mixer.export.edgetpu_model import BLOCK_PIECES, missing_pieces
from reference_ops import random_pixels

RELEASED = [family for family in FAMILIES.values() if family.checkpoint_format]


def trainable_parameters(model):  # BatchNorm statistics (Hire-MLP) are not parameters
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("family, builder, expected", [
    (family.name, builder, expected) for family in FAMILIES.values()
    for builder, expected in family.parameter_counts.items()])
def test_parameter_counts(family, builder, expected):
    model = getattr(keras_mixer, builder)()
    assert trainable_parameters(model) == expected
    del model
    keras.backend.clear_session()
    gc.collect()


def test_every_family_is_a_row_and_every_variant_is_counted():
    # a named variant's docstring starts "MixerS32: MLPMixer with ..."; the Edge TPU variants have no authors' count
    variants = {name for name in keras_mixer.__all__ if (getattr(keras_mixer, name).__doc__ or "").startswith(
        f"{name}: ") and not name.endswith("EdgeTPU")}
    counted = {builder for family in FAMILIES.values() for builder in family.parameter_counts}
    assert variants and variants <= counted, variants - counted


def write_checkpoint(family, state, path):
    if family.checkpoint_format == "npz":
        np.savez(path, **state)
    else:
        save_file(state, str(path))
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{family name: (state dict, its file)}: a random checkpoint of each released family's small config."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for family in RELEASED:
        state = family.state_dict(np.random.default_rng(0))
        made[family.name] = state, write_checkpoint(family, state, folder / f"{family.name}.{family.checkpoint_format}")
    return made


@pytest.mark.parametrize("name", [family.name for family in RELEASED])
def test_official_checkpoint_matches_reference_forward_from_pixels(name, checkpoints):
    """From pixels: our model fed `preprocess_input(pixels)` gives the authors' forward of their normalization of
    the same pixels (a PyTorch family's mean / std is a step inside the model)."""
    family = FAMILIES[name]
    state, path = checkpoints[name]
    model = family.build(classifier_activation=None, weights=path)
    pixels = random_pixels((2, family.image_size, family.image_size, 3))
    expected = family.forward(state, pixels)
    assert np.abs(expected).max() > 0.1  # not vacuous: the checkpoint's head has values
    assert np.max(np.abs(outputs(model, keras_mixer.preprocess_input(pixels)) - expected)) <= 1e-4


@pytest.mark.parametrize("name", [family.name for family in RELEASED])
def test_checkpoint_errors_name_the_key(name, checkpoints, tmp_path):
    family = FAMILIES[name]
    state, _ = checkpoints[name]
    key, shape, message = family.wrong_shape
    assert key in state
    wrong = write_checkpoint(family, {**state, key: np.zeros(shape, "float32")}, tmp_path / f"wrong.{family.checkpoint_format}")
    with pytest.raises(WeightsError, match=message):
        family.build(weights=wrong)
    key, variable = family.missing_key
    assert key in state
    missing = write_checkpoint(family, {k: v for k, v in state.items() if k != key},
                               tmp_path / f"missing.{family.checkpoint_format}")
    with pytest.raises(WeightsError, match=rf"missing keys.*{variable}"):
        family.build(weights=missing)
    extra_key = next(iter(state)) + "_extra"
    extra = write_checkpoint(family, {**state, extra_key: np.zeros(3, "float32")},
                             tmp_path / f"extra.{family.checkpoint_format}")
    with pytest.raises(WeightsError, match=rf"unexpected key.*{extra_key}"):
        family.build(weights=extra)


@pytest.mark.parametrize("name", [family.name for family in FAMILIES.values() if not family.checkpoint_format])
def test_a_family_without_released_weights_refuses_a_checkpoint_by_name(name, tmp_path):
    with pytest.raises(WeightsError, match="no released checkpoint"):
        FAMILIES[name].build(weights=str(tmp_path / "weights.pth"))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_edgetpu_rewrite_reads_pieces_the_family_blocks_have(name):
    """The Edge TPU form re-implements each block from its sub-layers by name (BLOCK_PIECES): renaming one in the
    family's layer module fails here, under the family's name, instead of deep in an export."""
    model = FAMILIES[name].build()
    blocks = {type(op).__name__ for op in model.operations if type(op) in BLOCK_PIECES}
    assert blocks & {"MixerBlock", "ASMLPBlock", "HireBlock", "PermutatorBlock", "RaftBlock"}, blocks
    assert [problem for op in model.operations for problem in missing_pieces(op)] == []


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_row_small_models_have_the_family_layers(name):
    """The row's models for the export and backend tests hold every layer class of the family's own config."""
    family = FAMILIES[name]

    def layer_classes(model):
        return {type(op).__name__ for op in model.operations}

    expected = layer_classes(family.build())
    assert layer_classes(family.small()) >= expected
    assert layer_classes(family.tiny()) >= expected
