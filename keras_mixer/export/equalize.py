"""Channel equalization before int8 conversion: a model with the same float function whose normalized activations
have no outlier channels.

Pretrained transformers and MLP models carry a few channels 10-100x wider than the rest after their LayerNorms
(RepQ-ViT, Li et al. 2023); a per-tensor int8 scale set by the widest channel leaves the others a handful of levels.
For every norm -> linear pair a block declares (`channel_equalization()`, keras_mixer.layers.equalization) and the
model's final norm -> average pooling -> head, a per-channel scale s moves from the activation into the weights:
the norm's scale and bias are divided by s, the linear layer's input rows multiplied by it. Exact in float. As in
SmoothQuant (Xiao et al. 2023), s_c = max|X_c|^a / max|W_c|^(1-a), with the migration strength a balancing the
activation's range against the weight row's (int8 weights are quantized per output channel, so a grown input row
costs less there than an outlier channel costs the activation).
"""

import contextlib

import keras
import numpy as np
from keras import ops

from keras_mixer.errors import ExportError
from keras_mixer.layers.nesting import nested_layers

# Measured on digits and image-folder Mixers given outlier channels (factors up to 100): 0.5 brings the default
# int8 and Edge TPU exports back to their outlier-free logit SQNR; see docs/export.md for the sweep.
MIGRATION_STRENGTH = 0.5
# the rewritten model must compute the original's outputs to this share of their largest magnitude: float32 rounding
# of the rescaled weights moves them by up to ~1e-5 of it (1.3e-5 measured on a random Hire-MLP-Tiny at 224, 18
# BatchNorm -> Dense pairs, softmax outputs), a wrong rewrite by their own order
FLOAT_TOLERANCE = 1e-4
_NORMS = ("LayerNorm", "BatchNormalization")
_CHANNEL_PRESERVING = ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "Dropout")
NO_LINEAR_CONSUMER = "no linear layer takes its output directly"


def _attribute(layer, path):
    for name in path.split("."):
        layer = getattr(layer, name)
    return layer


def _inbound(model):
    """{layer name: names of the layers its inputs come from} and the names of the model's output layers, from
    the functional model's config."""
    config = model.get_config()
    inbound = {entry["name"]: source_layers(entry.get("inbound_nodes", [])) for entry in config["layers"]}
    outputs = source_layers(config.get("output_layers", []))
    return inbound, outputs


def source_layers(value):
    """The names of the layers that made the Keras tensors named anywhere in a functional model's config value
    (a layer's inbound nodes, the model's output layers), in order."""
    return [history[0] for history in _histories(value)]


def _histories(value):
    """The [layer, node, tensor] triples of the Keras tensors named anywhere in a config value."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"]]
        return [h for item in value.values() for h in _histories(item)]
    if isinstance(value, (list, tuple)):
        if len(value) == 3 and isinstance(value[0], str) and all(isinstance(v, int) for v in value[1:]):
            return [list(value)]  # output_layers entries: [name, node, tensor]
        return [h for item in value for h in _histories(item)]
    return []


def _head_pairs(model):
    """The model-level norm -> (average pooling, dropout) -> Dense chains: per-channel scales commute with a mean."""
    inbound, outputs = _inbound(model)
    consumers = {}
    for name, sources in inbound.items():
        for source in sources:
            consumers.setdefault(source, []).append(name)
    layers = {layer.name: layer for layer in model.layers}
    pairs = []
    for layer in model.layers:
        if type(layer).__name__ not in ("Dense", "QuantizedDense", "FusedDense"):
            continue
        source = inbound.get(layer.name, [])
        while (len(source) == 1 and type(layers[source[0]]).__name__ in _CHANNEL_PRESERVING
               and len(consumers.get(source[0], [])) == 1 and source[0] not in outputs):
            source = inbound[source[0]]
        if len(source) == 1 and type(layers[source[0]]).__name__ in _NORMS:
            norm = layers[source[0]]
            if len(consumers.get(norm.name, [])) == 1 and norm.name not in outputs:
                pairs.append((norm, [layer]))
    return pairs


def equalization_pairs(model):
    """([(norm layer, [linear layers it feeds])], {norm path: why it is not equalized}) for a keras_mixer model."""
    pairs, skipped = [], {}
    for layer in nested_layers(model, include_self=False):
        if hasattr(layer, "channel_equalization"):
            for norm_name, target in layer.channel_equalization().items():
                norm = _attribute(layer, norm_name)
                if isinstance(target, str):
                    skipped[norm.path] = target
                else:
                    pairs.append((norm, [_attribute(layer, path) for path in target]))
    pairs += _head_pairs(model)
    paired = {norm.path for norm, _ in pairs}
    for layer in nested_layers(model, include_self=False):
        if type(layer).__name__ in _NORMS and layer.path not in paired and layer.path not in skipped:
            skipped[layer.path] = NO_LINEAR_CONSUMER
    return pairs, skipped


def _affine(norm):
    """The norm's per-channel (scale, bias) variables."""
    if type(norm).__name__ == "BatchNormalization":
        if not (norm.scale and norm.center):
            raise ExportError(f"equalize_channels: BatchNormalization {norm.path!r} has no gamma or beta to rescale")
        return norm.gamma, norm.beta
    return norm.scale, norm.bias


def _kernel(layer):
    kernel = getattr(layer, "kernel", None)
    if kernel is None or len(kernel.shape) != 2:
        raise ExportError(f"equalize_channels: {type(layer).__name__} {layer.path!r} is not a Dense layer with a "
                          "2-D kernel; its input rows cannot take a per-channel scale")
    return kernel


@contextlib.contextmanager
def _recording_channel_maxima(norms):
    """Records max |output| per channel of each layer in `norms` over the eager calls made inside the block."""
    maxima = {id(norm): None for norm in norms}

    def recorder(norm):
        call = norm.call

        def recording_call(*args, **kwargs):
            y = call(*args, **kwargs)
            values = np.abs(ops.convert_to_numpy(y)).reshape(-1, y.shape[-1]).max(axis=0)
            previous = maxima[id(norm)]
            maxima[id(norm)] = values if previous is None else np.maximum(previous, values)
            return y

        return recording_call

    for norm in norms:
        norm.call = recorder(norm)  # an instance attribute over the class's call, removed below
    try:
        yield maxima
    finally:
        for norm in norms:
            del norm.call


def _outputs(model, images, batch_size):
    # eager calls (not predict): the recording above sees concrete values
    return np.concatenate([ops.convert_to_numpy(model(images[start : start + batch_size], training=False))
                           for start in range(0, len(images), batch_size)])


def _copy(model):
    """The same functional model, rebuilt from its config, with its own copy of the weights."""
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def equalize_channels(model, calibration, strength=MIGRATION_STRENGTH, batch_size=32):
    """A copy of `model` whose equalizable norm -> linear pairs carry per-channel scales that balance the norm's
    activation range (measured on `calibration`, preprocessed images [N, H, W, C]) against the linear layer's weight
    rows, and a report: per norm, the largest channel range and the spread of channel ranges (largest over median)
    before and after, or why the norm was left alone. The copy's outputs on `calibration` equal the model's to
    `FLOAT_TOLERANCE` of their magnitude, or ExportError is raised: it never returns a different model."""
    from keras_mixer.quantization import is_quantized

    if not 0.0 <= strength <= 1.0:
        raise ExportError(f"equalize_channels: strength must be in [0, 1], got {strength}")
    if is_quantized(model):
        raise ExportError(f"equalize_channels: {model.name!r} is quantization-aware; its fake-quant ranges were "
                          "learned for its weights as they are (equalize the float model before quantize_model)")
    if not isinstance(model, keras.Model) or not hasattr(model, "_operations_by_depth"):
        raise ExportError(f"equalize_channels rewrites functional keras_mixer models; got {type(model).__name__}")
    calibration = np.asarray(calibration, np.float32)
    equalized = _copy(model)
    pairs, skipped = equalization_pairs(equalized)
    report = {"strength": strength, "equalized": [], "not_equalized": [{"norm": path, "reason": reason}
                                                                      for path, reason in sorted(skipped.items())]}
    if not pairs:
        return equalized, report
    norms = [norm for norm, _ in pairs]
    with _recording_channel_maxima(norms) as maxima:
        _outputs(equalized, calibration, batch_size)
    for norm, linears in pairs:
        activation = maxima[id(norm)]
        weight = np.max([np.abs(ops.convert_to_numpy(_kernel(layer))).max(axis=1) for layer in linears], axis=0)
        usable = (activation > 0) & (weight > 0)  # a dead channel or an all-zero row (a fresh head) keeps s = 1
        scales = np.ones_like(activation)
        scales[usable] = activation[usable] ** strength / weight[usable] ** (1.0 - strength)
        scale, bias = _affine(norm)
        scale.assign(ops.convert_to_numpy(scale) / scales)
        bias.assign(ops.convert_to_numpy(bias) / scales)
        for layer in linears:
            kernel = _kernel(layer)
            kernel.assign(ops.convert_to_numpy(kernel) * scales[:, None])
        after = activation / scales
        report["equalized"].append({
            "norm": norm.path, "into": [layer.path for layer in linears],
            "range_before": float(activation.max()), "range_after": float(after.max()),
            "spread_before": float(activation.max() / max(np.median(activation), 1e-12)),
            "spread_after": float(after.max() / max(np.median(after), 1e-12)),
        })
    check = calibration[:batch_size]
    want, got = _outputs(model, check, batch_size), _outputs(equalized, check, batch_size)
    error = float(np.max(np.abs(want - got)))
    if error > FLOAT_TOLERANCE * max(float(np.max(np.abs(want))), 1e-6):
        raise ExportError(f"equalize_channels: the rewritten {model.name!r} differs from the model by {error:.3g} "
                          f"(outputs up to {np.max(np.abs(want)):.3g}); refusing to export a different model")
    report["max_output_difference"] = error
    return equalized, report
