"""`edgetpu_model` for every family: the same function as the model (its own GELU), an int8 export every op of which
the Edge TPU compiler maps with no float32 tensor, and a refusal for anything it cannot rewrite.

Every model gets a non-zero head and non-trivial norm statistics first: a fresh Mixer's head is zero-initialized, so
every logit is 0 and a graph that drops whole blocks would still "match" (Sparse-MLP's experts once vanished so)."""

import re

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.errors import ExportError
from keras_mixer.export import load_interpreter, predict, to_tflite
from keras_mixer.export.edgetpu import check_edgetpu
from keras_mixer.export.flatbuffer import read_graph
from keras_mixer.export.edgetpu_model import edgetpu_model
from outliers import sqnr_db
from families import EDGETPU_MAPPABLE, SMALL, outputs, with_nonzero_weights

def images(model, count, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (count, *model.input_shape[1:])).astype("float32")


def assert_same_function(model, **options):
    x = images(model, 2)
    form = edgetpu_model(model, gelu=None, **options)
    got = np.concatenate([outputs(form, x[i : i + 1]) for i in range(len(x))])  # the form's static batch of 1
    want = outputs(model, x)
    assert np.abs(want).max() > 0.05  # not vacuous: the outputs vary
    np.testing.assert_allclose(got, want, atol=1e-4)


def float_ops(path):
    return {(op.op, tensor.dtype) for op in read_graph(path) for tensor in op.inputs + op.outputs
            if tensor.dtype not in ("INT8", "UINT8", "INT32")}


def assert_maps_fully(model, path, samples=16, **options):
    exported = to_tflite(edgetpu_model(model), path, "int8", representative_data=images(model, samples), **options)
    rows, summary = check_edgetpu(exported)
    assert summary["cpu_ops"] == 0 and summary["edgetpu_ops"] == len(rows), summary
    floats = float_ops(exported)
    assert not floats, floats  # int32 only for shapes and biases
    return rows


@pytest.mark.parametrize("family", EDGETPU_MAPPABLE)
def test_form_is_the_model_with_its_own_gelu(family):
    assert_same_function(with_nonzero_weights(SMALL[family]()))


@pytest.mark.parametrize("family", EDGETPU_MAPPABLE)
def test_form_maps_every_op_with_no_float_tensor(family, tmp_path):
    rows = assert_maps_fully(with_nonzero_weights(SMALL[family]()), tmp_path / "edgetpu.tflite")
    assert not {"GELU", "BATCH_MATMUL", "DEQUANTIZE", "GATHER"} & {r.op for r in rows}


def test_a_wrong_rewrite_is_caught():
    """The checks above fail on a form that is wrong in one place: RaftMLP's horizontal MLP without the feature
    permutation its layout needs."""
    from keras_mixer.export import edgetpu_model as forms

    model = with_nonzero_weights(SMALL["raft_mlp"]())
    original = forms._Rewriter.mlp
    try:
        forms._Rewriter.mlp = lambda self, x, mlp, kernel_order=None: original(self, x, mlp)
        with pytest.raises(AssertionError):
            assert_same_function(model)
    finally:
        forms._Rewriter.mlp = original


def test_sparse_mlp_is_refused_by_name_or_split_at_its_first_expert_layer(tmp_path):
    model = with_nonzero_weights(SMALL["sparse_mlp"]())
    with pytest.raises(ExportError, match=r"expert layers SparseBlock_1, SparseBlock_2 \(SparseMixerBlock\).*"
                                          r"experts_on_cpu=True"):
        edgetpu_model(model)
    assert_same_function(model, experts_on_cpu=True)
    path = to_tflite(edgetpu_model(model, experts_on_cpu=True), tmp_path / "split.tflite", "int8",
                     representative_data=images(model, 16))
    rows, summary = check_edgetpu(path)
    assert "GELU" not in {r.op for r in rows}  # the CPU part too: the compiler would reject the whole file
    first_cpu = summary["ops"] - summary["cpu_ops"]
    assert 0 < first_cpu < summary["ops"] and all(r.on_edgetpu for r in rows[:first_cpu])
    # the dense block maps; the first op on the CPU is the first expert block's (Keras may suffix its name)
    assert re.search(r"/SparseBlock_1(_\d+)?/", summary["first_cpu_tensor"]), summary


@pytest.mark.parametrize("family", ["as_mlp", "hire_mlp", "raft_mlp", "vip"])  # the Mixer's: test_export
def test_integer_only_export_has_no_float_tensor(family, tmp_path):
    """What NNAPI and DSPs need: the standard graph (GELU builtin and all) with every op integer."""
    model = with_nonzero_weights(SMALL[family]())
    x = images(model, 16)
    path = to_tflite(model, tmp_path / "all_int8.tflite", "int8", representative_data=x, integer_only=True)
    assert not float_ops(path)
    # run on data: its outputs are the model's within int8 noise (a constant output would be ~0 dB)
    assert sqnr_db(outputs(model, x), predict(load_interpreter(path), x)) >= 15


def test_integer_only_sparse_mlp_is_refused_not_left_float(tmp_path):
    """The converter used to leave Sparse-MLP's routing (TOPK_V2, CAST, ...) float32 in an integer_only file."""
    model = keras_mixer.SparseMLP(4, 16, 1, 8, 32, num_sparse_blocks=1, min_capacity=1, input_shape=(16, 16, 3),
                                  classes=5)
    with pytest.raises(ExportError, match=r"integer_only export of 'sparse_mlp' would keep float32 tensors in .*"
                                          r"TOPK_V2"):
        to_tflite(model, tmp_path / "all_int8.tflite", "int8", representative_data=images(model, 8),
                  integer_only=True)
    assert not (tmp_path / "all_int8.tflite").exists()


class _OtherDense(keras.layers.Dense):
    """Same name, another class: its call may differ from keras' Dense, so the rewrite must not treat it as one."""


_OtherDense.__name__ = "Dense"


@pytest.mark.parametrize("build, named", [
    (lambda: keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]),
     "functional models; got Sequential"),
    (lambda: keras.Model(*(lambda i: (i, keras.layers.MaxPooling2D()(keras.layers.Conv2D(4, 1)(i))))(
        keras.Input((8, 8, 3)))), "it has MaxPooling2D"),
    (lambda: keras.Model(*(lambda i: (i, _OtherDense(4)(i)))(keras.Input((8, 8, 3)))),
     r"test_edgetpu_forms.Dense \(not the Dense it rewrites\)"),
    # a form's anonymous ops were refused one by one; a path was an AttributeError
    (lambda: edgetpu_model(SMALL["mlp_mixer"]()), "'mlp_mixer_edgetpu' is an Edge TPU form already"),
    (lambda: "model.keras", "edgetpu_model takes a keras.Model, got str 'model.keras': load a .keras file"),
])
def test_an_unknown_model_is_refused_by_class(build, named):
    with pytest.raises(ExportError, match=named):
        edgetpu_model(build())


def test_a_renamed_or_replaced_sub_layer_is_refused_by_name():
    model = SMALL["as_mlp"]()
    block = next(op for op in model.operations if isinstance(op, keras_mixer.layers.ASMLPBlock))
    # past Keras' lock on a built layer's state, as an edit of the block's module would be
    object.__setattr__(block.axial_shift, "conv2_1", keras.layers.Conv2D(4, 1))  # another class, same name
    with pytest.raises(ExportError, match=rf"{block.name}\.axial_shift\.conv2_1 \(expected Dense, got Conv2D\)"):
        edgetpu_model(model)
    object.__setattr__(block, "mixing", block.__dict__.pop("mlp"))  # renamed
    with pytest.raises(ExportError, match=rf"{block.name}\.mlp \(expected MlpBlock, got nothing\)"):
        edgetpu_model(model)


def test_token_grid_and_pooled_backbones():
    for options in (dict(include_top=False), dict(include_top=False, pooling="avg")):
        assert_same_function(with_nonzero_weights(
            keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), **options)))
    stages = keras_mixer.ASMLP(8, (1, 1, 1, 1), input_shape=(32, 32, 3), include_top=False, return_stages=True)
    form = edgetpu_model(stages, gelu=None)
    x = images(stages, 1)
    for got, want in zip(outputs(form, x), outputs(stages, x)):
        np.testing.assert_allclose(got, want, atol=1e-4)


# --- the released architectures at 224 and one other size (slow: minutes per variant) --------------------------

def _vip_s14_at(size):  # ViP fits one grid per segment_dim: 224 / 14 = 16 as released, 112 / 14 = 8
    from keras_mixer.models.vip import VIP_VARIANTS

    config = VIP_VARIANTS["vip_small14"]
    return keras_mixer.VisionPermutator(**{**config, "segment_dim": (size // config["patch_size"],) * 4},
                                        input_shape=(size, size, 3))


RELEASED = {  # the smallest variant of each family at 224 and at a second size the family supports
    **{f"{variant}@{size}": (lambda v=variant, s=size: keras_mixer.create_model(v, input_shape=(s, s, 3)))
       for variant, sizes in (("mixer_s32", (224, 160)), ("as_mlp_tiny", (224, 256)), ("hire_mlp_tiny", (224, 192)),
                              ("raft_mlp_small", (224, 256))) for size in sizes},
    "vip_small14@224": lambda: _vip_s14_at(224),
    "vip_small14@112": lambda: _vip_s14_at(112),
}


# the 224 form of each family is the README's mapped-op claim: in the default run (~3 min for the five); the second
# sizes in the slow set
@pytest.mark.parametrize("name", [name if name.endswith("@224") else pytest.param(name, marks=pytest.mark.slow)
                                  for name in sorted(RELEASED)])
def test_released_variant_forms(name, tmp_path):
    model = with_nonzero_weights(RELEASED[name]())
    assert_same_function(model)
    # which ops map depends on the graph, not on the ranges: the converter's min/max ranges, no equalization (both
    # move ranges and weights only) and 4 calibration images (~1 s each at 224) save half the time; the default
    # export of a form maps fully too (test_export_cli_writes_the_form_of_any_family)
    assert_maps_fully(model, tmp_path / "edgetpu.tflite", samples=4, equalize=False, calibration_method="minmax")


def test_export_cli_writes_the_form_of_any_family(tmp_path, capsys):
    from keras_mixer_cli import main

    keras_mixer.ASMLP(8, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=10).save(tmp_path / "as_mlp.keras")
    assert main(["export", str(tmp_path / "as_mlp.keras"), str(tmp_path / "form.tflite"), "--edgetpu",
                 "--calibration", "digits", "--calibration-samples", "16"]) == 0
    assert main(["edgetpu-check", str(tmp_path / "form.tflite")]) == 0
    assert "ops would run on the Edge TPU, 0 on the CPU" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "as_mlp.keras"), str(tmp_path / "f.tflite"), "--edgetpu",
                 "--quantization", "float32"]) == 2
    assert "--edgetpu exports int8 or uint8 at batch 1" in capsys.readouterr().err
