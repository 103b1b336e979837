"""What an export will do, decided before anything converts: a frozen `ExportPlan` computed from facts about the
model (`ModelFacts`) and the caller's `ExportOptions` by a pure function, `plan_export`. It can be read, printed
(`keras-mixer export --verbose`) and tested without TensorFlow; `to_tflite` carries it out.

Routes: "whole" converts the model as one graph from its traced function in memory; "saved_model" converts it as one
graph from a SavedModel written to disk (one copy of the weights fewer in this process: Mixer-L/16's float
conversion peaks at 6.2 GB instead of 7.8 GB); "blocks" converts a chain of blocks a piece at a time and joins the
pieces (`keras_mixer.export.blockwise`: memory bounded by a piece). "auto" takes "whole" for small models and, above
`LARGE_MODEL_BYTES` of float32 weights, "blocks" where it applies, else "saved_model".
"""

import dataclasses
import re

from keras_mixer.errors import ExportError, is_whole_number
from keras_mixer.export.calibration import CALIBRATION_METHODS

QUANTIZATION_MODES = ("float32", "float16", "dynamic", "int8", "uint8")
ROUTES = ("auto", "whole", "saved_model", "blocks")
# Ops an int8 export keeps float32 unless integer_only: the elementwise ops, LayerNorm's statistics and GELU; the
# matmuls and convolutions, where the FLOPs and weights are, stay int8. XNNPACK (LiteRT's CPU delegate) has no int8
# kernels for SQUARED_DIFFERENCE, RSQRT or GELU, nor for the ADD of LayerNorm's tiny epsilon (its scale ratio is out
# of range), so an all-integer Mixer-S/32 splits into 51 delegate partitions with those ops on single-threaded
# builtin kernels between them; with these ops float the whole graph is one XNNPACK partition (see docs/benchmarks.md).
XNNPACK_FLOAT_OPS = ("ADD", "SUB", "MUL", "MEAN", "SQUARED_DIFFERENCE", "RSQRT", "GELU")
# Above this size of float32 weights "auto" takes a route that spares memory: converted whole from a Keras model,
# the converter freezes the variables into a graph in this process, one more copy of the weights. Small models keep
# the in-memory route (no disk writes, a few seconds faster).
LARGE_MODEL_BYTES = 256 * 2**20
# float32 weights per piece of the "blocks" route: one Mixer-L/16 or H/14 block (50-54 MB) each; the converter's
# ~10x of a piece stays well under the model's own size
PIECE_BYTES = 64 * 2**20


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the plan needs to know of a model."""

    name: str
    weight_bytes: int  # float32 bytes of its weights
    chain: bool  # its graph is a chain of layers (`blockwise.layer_chain`), so it can convert block by block
    fake_quant: bool  # a QAT model: it carries fake-quant ranges
    probabilities: bool  # it ends in a softmax
    experts: bool = False  # it has mixture-of-experts layers (Sparse-MLP)
    edgetpu_form: bool = False  # an `edgetpu_model` graph
    edgetpu_integer_only: bool = False
    experts_on_cpu: bool = False  # an Edge TPU graph whose expert layers stay on the CPU

    @classmethod
    def of(cls, model, route="auto"):
        """The facts of a Keras model. Whether it is a chain is looked at only where a route may need it (a large
        model, or route="blocks"): it reads the model's config."""
        from keras_mixer.datasets import refuse_input_rescaling
        from keras_mixer.export import blockwise
        from keras_mixer.export.edgetpu_model import edgetpu_form
        from keras_mixer.layers.moe import MixtureOfExperts
        from keras_mixer.layers.nesting import nested_layers
        from keras_mixer.models.applications import output_activation, require_keras_model
        from keras_mixer.quantization import is_quantized

        require_keras_model(model, "export", ExportError)
        refuse_input_rescaling(model, ExportError)
        size = blockwise.weight_bytes([model])
        form = edgetpu_form(model)
        chain = ((size > LARGE_MODEL_BYTES or route == "blocks") and blockwise.layer_chain(model) is not None)
        return cls(name=model.name, weight_bytes=size, chain=chain, fake_quant=is_quantized(model),
                   probabilities=output_activation(model) == "softmax",
                   experts=any(isinstance(layer, MixtureOfExperts) for layer in nested_layers(model)),
                   edgetpu_form=form is not None,
                   edgetpu_integer_only=form is not None and form.integer_only,
                   experts_on_cpu=form is not None and form.keeps_experts)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What the caller asked for (`to_tflite`'s arguments that decide the plan), checked on creation."""

    quantization: str = "int8"
    calibrated: bool = False  # representative data was given
    batch_size: int = 1
    float_io: bool = False
    integer_only: bool | None = None
    equalize: bool = True
    report: bool = False
    float_layers: tuple | int | None = None
    calibration_method: str = "percentile"
    calibration_steps: int = 200
    calibration_samples: int = 256
    route: str = "auto"
    piece_bytes: int | None = None

    def __post_init__(self):
        # a batch of 0 wrote a file no interpreter can run; float_layers=-1 kept all but one op float
        for name, value, smallest in (("batch_size", self.batch_size, 1),
                                      ("calibration_steps", self.calibration_steps, 1),
                                      ("calibration_samples", self.calibration_samples, 1)):
            if not is_whole_number(value) or value < smallest:
                # None made a dynamic batch that the calibration and the Edge TPU compiler cannot take
                static = " (the exported graph's static batch)" if name == "batch_size" else ""
                raise ExportError(f"{name} must be a whole number >= {smallest}{static}, got {value!r}")
        if not (self.float_layers is None or is_whole_number(self.float_layers) and self.float_layers >= 0
                or isinstance(self.float_layers, (str, list, tuple))):
            raise ExportError(f"float_layers must be regular expressions or a number of ops >= 0, got "
                              f"{self.float_layers!r}")
        for name, value, allowed in (("quantization", self.quantization, QUANTIZATION_MODES),
                                     ("calibration_method", self.calibration_method, CALIBRATION_METHODS),
                                     ("route", self.route, ROUTES)):
            if value not in allowed:
                raise ExportError(f"{name} must be one of {allowed}, got {value!r}")
        if isinstance(self.float_layers, (list, str)):
            object.__setattr__(self, "float_layers", tuple([self.float_layers] if isinstance(self.float_layers, str)
                                                           else self.float_layers))
        if isinstance(self.float_layers, tuple):
            for pattern in self.float_layers:
                if not isinstance(pattern, str):
                    raise ExportError(f"float_layers: {pattern!r} is not a regular expression (a str)")
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ExportError(f"float_layers: {pattern!r} is not a regular expression ({error})") from error
        if self.piece_bytes is not None and (self.route != "blocks" or self.piece_bytes < 1):
            raise ExportError(f"piece_bytes applies to route='blocks' and is a positive byte count, got "
                              f"{self.piece_bytes!r} with route={self.route!r}")


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """Every decision of one export. `integer`: int8/uint8 activations; `calibrated`: their ranges come from
    representative data (else from the model's fake-quant ranges); `strip_fake_quant`: a QAT model exported as its
    fine-tuned float graph (an int8 export calibrated like a post-training export, the int8 kernels quantized per
    tensor as QAT trained them); `logit_range`: the logits get an int8 range with headroom over the calibration
    logits; `float_ops` and `experts_float`: what a calibrated int8 export keeps float32; `io_type`: the file's
    input and output type."""

    model: str
    quantization: str
    route: str
    route_reason: str
    batch_size: int
    integer: bool
    integer_only: bool
    calibrated: bool
    calibration_method: str
    calibration_steps: int
    equalize: bool
    strip_fake_quant: bool
    logit_range: bool
    float_ops: tuple
    experts_float: bool
    experts_on_cpu: bool
    io_type: str
    report_rows: bool
    check_integer_only: bool
    piece_bytes: int

    @property
    def from_saved_model(self):
        return self.route == "saved_model"

    def lines(self):
        """The plan in words, one decision per line."""
        mode = self.quantization + (", integer only" if self.integer_only and self.integer else "")
        if not self.integer:
            ranges = "none (float activations)"
        elif self.calibrated:  # one step a line: the plan fits a terminal
            ranges = "\n".join([f"calibrated on representative data ({self.calibration_method})"]
                                + ["outlier channels equalized first"] * self.equalize
                                + ["logits with headroom"] * bool(self.logit_range))
        else:
            ranges = "the model's own fake-quant ranges"
        float_kept = list(self.float_ops) + (["mixture-of-experts nodes"] if self.experts_float else [])
        rows = [("model", self.model), ("quantization", mode), ("batch", str(self.batch_size)),
                ("input/output", self.io_type),
                ("route", f"{self.route}: {self.route_reason}"),
                ("int8 ranges", ranges)]
        if self.integer:
            rows.append(("kept float32", ", ".join(float_kept) or "nothing"))
        if self.strip_fake_quant:
            kernels = "" if self.quantization in ("float32", "float16") else ", int8 kernels per tensor"
            rows.append(("QAT model", f"exported as its fine-tuned float graph (fake-quant removed){kernels}"))
        if self.report_rows:
            rows.append(("per-op errors", "measured on the calibration images"))
        return [f"{name if not i else '':<13} {part}"
                for name, value in rows for i, part in enumerate(value.split("\n"))]


def _route(facts, options, integer_only, fake_quant_ranges):
    """The route and why, or ExportError when the caller's route cannot carry this export."""
    large = facts.weight_bytes > LARGE_MODEL_BYTES
    size = f"{facts.weight_bytes / 2**20:,.1f} MB of float32 weights"
    # pieces meet on float32 tensors: integer-only graphs stay whole (their pieces would meet on int8 tensors whose
    # scales each piece sets on its own), as do Edge TPU forms and a QAT model's export from its own ranges
    no_blocks = ("an integer-only export's pieces would meet on int8 tensors" if integer_only
                 else "an Edge TPU graph converts whole" if facts.edgetpu_form
                 else "a QAT model converting from its own fake-quant ranges converts whole" if fake_quant_ranges
                 else "its graph is not a chain of layers" if not facts.chain else None)
    if options.route == "blocks":
        if no_blocks:
            raise ExportError(f"route='blocks' cannot export {facts.name!r}: {no_blocks}; use route 'whole' or "
                              "'saved_model'")
        return "blocks", "chosen by the caller"
    if options.route != "auto":
        return options.route, "chosen by the caller"
    if not large:
        return "whole", f"{size}, at most {LARGE_MODEL_BYTES // 2**20} MB"
    if no_blocks:
        return "saved_model", f"{size}, and not by blocks: {no_blocks}"
    return "blocks", f"{size}, above {LARGE_MODEL_BYTES // 2**20} MB"


def plan_export(facts, options):
    """The `ExportPlan` of exporting a model with `facts` as `options` ask, or ExportError for what cannot be."""
    quantization = options.quantization
    integer = quantization in ("int8", "uint8")
    integer_only = options.integer_only
    if integer_only and not integer:  # the caller expects an all-integer file: say it is not one
        raise ExportError(f"integer_only applies to int8/uint8 exports; quantization={quantization!r} keeps float "
                          "activations")
    if integer_only is None:
        integer_only = quantization == "uint8" or facts.edgetpu_integer_only
    integer_only = bool(integer_only)
    if integer and not options.calibrated and not facts.fake_quant:
        raise ExportError(
            f"quantization={quantization!r} needs representative_data (a few hundred training images, or a dataset "
            "name) to calibrate activation ranges, or a QAT model from keras_mixer.quantization.quantize_model")
    calibrated = integer and options.calibrated
    # a QAT model's int8 export keeps its fake-quant ranges without data or with integer_only; a float or
    # dynamic-range export is of its fine-tuned float graph: with the fake-quant ops kept, the converter quantized
    # float16 and dynamic exports from them (int8 weights and activations in a file labelled float16)
    fake_quant_ranges = facts.fake_quant and integer and not (calibrated and not integer_only)
    report_rows = options.report or bool(options.float_layers)
    if report_rows and (not calibrated or fake_quant_ranges):
        raise ExportError("report and float_layers apply to a calibrated int8 export: pass int8/uint8 quantization "
                          "with representative_data (a QAT model exported without it, or integer_only, converts from "
                          "its own fake-quant ranges)")
    if options.float_layers and integer_only:
        raise ExportError("float_layers keeps ops float32, which an integer_only or Edge TPU export cannot have")
    route, reason = _route(facts, options, integer_only, fake_quant_ranges)
    keep_float = calibrated and not integer_only  # the denylists act at calibration
    return ExportPlan(
        model=facts.name, quantization=quantization, route=route, route_reason=reason,
        batch_size=options.batch_size, integer=integer, integer_only=integer_only, calibrated=calibrated,
        # its learned ranges rule; narrowing the others around them was not measured
        calibration_method="minmax" if fake_quant_ranges else options.calibration_method,
        calibration_steps=options.calibration_steps,
        equalize=calibrated and options.equalize and not facts.fake_quant,
        strip_fake_quant=facts.fake_quant and not fake_quant_ranges,
        logit_range=calibrated and not fake_quant_ranges and not facts.probabilities,
        float_ops=XNNPACK_FLOAT_OPS if keep_float else (),
        # an Edge-TPU graph's expert layers run on the CPU anyway: float there, as in the default export
        experts_float=integer and facts.experts and (keep_float or (facts.experts_on_cpu and calibrated)),
        experts_on_cpu=facts.experts_on_cpu,
        io_type="float32" if options.float_io or not integer else quantization,
        report_rows=report_rows,
        check_integer_only=integer and integer_only and not facts.experts_on_cpu,
        piece_bytes=options.piece_bytes or PIECE_BYTES)


def export_plan(model, **options):
    """The `ExportPlan` of `to_tflite(model, ..., **options)`; `calibrated=True` stands for representative_data."""
    options = ExportOptions(**options)
    return plan_export(ModelFacts.of(model, options.route), options)

