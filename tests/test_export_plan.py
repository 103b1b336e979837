"""The export plan: every decision `to_tflite` takes, computed from model facts and options alone (no TensorFlow,
no conversion). What each route writes is tested in test_export.py."""

import subprocess
import sys

import pytest

from keras_mixer.errors import ExportError
from keras_mixer.export.plan import (LARGE_MODEL_BYTES, PIECE_BYTES, XNNPACK_FLOAT_OPS, ExportOptions, ModelFacts,
                                     plan_export)

SMALL = ModelFacts(name="small", weight_bytes=2**20, chain=True, fake_quant=False, probabilities=False)
LARGE_CHAIN = ModelFacts(name="large", weight_bytes=LARGE_MODEL_BYTES + 1, chain=True, fake_quant=False,
                         probabilities=False)
QAT = ModelFacts(name="qat", weight_bytes=2**20, chain=True, fake_quant=True, probabilities=False)
EDGETPU = ModelFacts(name="edgetpu", weight_bytes=2**20, chain=False, fake_quant=False, probabilities=False,
                     edgetpu_form=True, edgetpu_integer_only=True)


def plan(facts, **options):
    return plan_export(facts, ExportOptions(**options))


def test_default_int8_export_of_a_small_model_is_whole_calibrated_and_keeps_xnnpack_ops_float():
    got = plan(SMALL, calibrated=True)
    assert (got.route, got.integer, got.integer_only, got.calibrated, got.equalize, got.logit_range) == (
        "whole", True, False, True, True, True)
    assert got.float_ops == XNNPACK_FLOAT_OPS and got.io_type == "int8" and got.calibration_method == "percentile"
    assert not got.strip_fake_quant and not got.check_integer_only


@pytest.mark.parametrize("facts, options, route", [
    (LARGE_CHAIN, {"calibrated": True}, "blocks"),
    (LARGE_CHAIN, {"quantization": "float16"}, "blocks"),
    (LARGE_CHAIN, {"calibrated": True, "integer_only": True}, "saved_model"),  # pieces would meet on int8
    (LARGE_CHAIN, {"quantization": "uint8", "calibrated": True}, "saved_model"),  # uint8 is integer-only
    (ModelFacts("large", LARGE_MODEL_BYTES + 1, chain=False, fake_quant=False, probabilities=False),
     {"quantization": "float32"},
     "saved_model"),
    (SMALL, {"quantization": "float32"}, "whole"),
])
def test_auto_route_spares_memory_above_the_threshold_by_blocks_where_pieces_meet_on_float(facts, options, route):
    assert plan(facts, **{"quantization": "int8", **options}).route == route


def test_a_chosen_route_is_kept_or_refused_with_the_reason():
    assert plan(SMALL, calibrated=True, route="saved_model").route == "saved_model"
    assert plan(SMALL, quantization="float32", route="blocks", piece_bytes=1).piece_bytes == 1
    assert plan(SMALL, quantization="float32", route="blocks").piece_bytes == PIECE_BYTES
    with pytest.raises(ExportError, match="route='blocks' cannot export 'small': an integer-only export"):
        plan(SMALL, calibrated=True, integer_only=True, route="blocks")
    with pytest.raises(ExportError, match="'edgetpu': an Edge TPU graph converts whole"):
        plan(EDGETPU, calibrated=True, integer_only=False, route="blocks")
    with pytest.raises(ExportError, match="not a chain of layers"):
        plan(ModelFacts("branchy", 1, chain=False, fake_quant=False, probabilities=False), quantization="float32",
             route="blocks")
    with pytest.raises(ExportError, match="piece_bytes applies to route='blocks'"):
        ExportOptions(piece_bytes=1)
    with pytest.raises(ExportError, match="route must be one of"):
        ExportOptions(route="pieces")


def test_qat_model_exports_from_its_ranges_without_data_and_as_stripped_float_with_data():
    own = plan(QAT)
    assert (own.calibrated, own.calibration_method, own.logit_range, own.float_ops, own.strip_fake_quant) == (
        False, "minmax", False, (), False)
    calibrated = plan(QAT, calibrated=True)
    assert calibrated.strip_fake_quant and calibrated.logit_range and calibrated.float_ops == XNNPACK_FLOAT_OPS
    assert not calibrated.equalize  # `keras-mixer qat` equalized the float model before fine-tuning
    integer = plan(QAT, calibrated=True, integer_only=True)
    assert not integer.strip_fake_quant and integer.calibration_method == "minmax"
    with pytest.raises(ExportError, match="report and float_layers apply to a calibrated int8 export"):
        plan(QAT, calibrated=True, integer_only=True, report=True)
    with pytest.raises(ExportError, match="route='blocks' cannot export 'qat': a QAT model converting from its own"):
        plan(QAT, route="blocks")


def test_edgetpu_form_is_integer_only_and_experts_on_the_cpu_stay_float():
    got = plan(EDGETPU, calibrated=True)
    assert got.integer_only and got.check_integer_only and got.float_ops == () and not got.experts_float
    experts = ModelFacts("edgetpu", 1, chain=False, fake_quant=False, probabilities=False, experts=True,
                         edgetpu_form=True, edgetpu_integer_only=True, experts_on_cpu=True)
    got = plan(experts, calibrated=True)
    assert got.experts_float and not got.check_integer_only


@pytest.mark.parametrize("facts, options, message", [
    (SMALL, {"quantization": "int8"}, "needs representative_data"),
    (SMALL, {"quantization": "dynamic", "report": True}, "report and float_layers apply"),
    # a float16 file with float activations was written where the caller asked for an all-integer one
    (SMALL, {"quantization": "float16", "integer_only": True},
     "integer_only applies to int8/uint8 exports; quantization='float16' keeps float activations"),
    (SMALL, {"calibrated": True, "integer_only": True, "float_layers": ("block",)}, "float_layers keeps ops"),
    (SMALL, {"float_layers": ["("]}, r"'\(' is not a regular expression"),
    (SMALL, {"quantization": "int4"}, "quantization must be one of"),
    (SMALL, {"calibration_method": "kl"}, "calibration_method must be one of"),
    # each was taken: batch 0 wrote a file no interpreter runs, None a dynamic batch the calibration failed on,
    # float_layers=-1 kept all ops but one float, calibration_samples=-5 read the whole dataset
    (SMALL, {"batch_size": 0}, r"batch_size must be a whole number >= 1 \(the exported graph's static batch\), got 0"),
    (SMALL, {"batch_size": None}, "batch_size must be a whole number >= 1 .*got None"),
    (SMALL, {"batch_size": True}, "batch_size must be a whole number >= 1 .*got True"),
    (SMALL, {"calibration_steps": 0}, "calibration_steps must be a whole number >= 1, got 0"),
    (SMALL, {"calibration_samples": -5}, "calibration_samples must be a whole number >= 1, got -5"),
    (SMALL, {"float_layers": -1}, "float_layers must be regular expressions or a number of ops >= 0, got -1"),
    (SMALL, {"float_layers": [3]}, r"float_layers: 3 is not a regular expression \(a str\)"),
])
def test_impossible_options_are_refused_before_any_work(facts, options, message):
    with pytest.raises(ExportError, match=message):
        plan(facts, **options)


def test_something_other_than_a_keras_model_is_refused_naming_it():
    from keras_mixer.export.plan import export_plan

    with pytest.raises(ExportError, match="export takes a keras.Model, got str 'm.keras': load a .keras file with "
                                          "keras.models.load_model first"):
        export_plan("m.keras")  # was an AttributeError ('str' object has no attribute 'weights')


def test_mixture_of_experts_nodes_stay_float_in_the_default_int8_export_only():
    sparse = ModelFacts("sparse", 1, chain=True, fake_quant=False, probabilities=False, experts=True)
    assert plan(sparse, calibrated=True).experts_float and not plan(SMALL, calibrated=True).experts_float
    assert not plan(sparse, calibrated=True, integer_only=True).experts_float


def test_softmax_models_keep_their_probability_range_and_float_io_keeps_float_input():
    softmax = ModelFacts("softmax", 1, chain=True, fake_quant=False, probabilities=True)
    assert not plan(softmax, calibrated=True).logit_range
    assert plan(SMALL, calibrated=True, float_io=True).io_type == "float32"
    assert plan(SMALL, quantization="float16").io_type == "float32"


def test_plan_reads_as_lines_naming_route_and_reason():
    lines = "\n".join(plan(LARGE_CHAIN, calibrated=True).lines())
    assert "route         blocks: 256.0 MB of float32 weights, above 256 MB" in lines
    assert "kept float32  ADD, SUB, MUL" in lines


def test_planning_needs_no_tensorflow():
    code = ("import sys; from keras_mixer.export.plan import ExportOptions, ModelFacts, plan_export; "
            "plan_export(ModelFacts('m', 1, True, False, False), ExportOptions(calibrated=True)); "
            "assert not [m for m in sys.modules if m.startswith('tensorflow')], 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"KERAS_BACKEND": "jax", "PATH": ""})
