"""Outlier channels as pretrained checkpoints carry them after their LayerNorms, injected without changing the
float function: a few channels' norm scale and bias times k, the next linear layer's input rows divided by k."""

import keras
import numpy as np

OUTLIER_FACTORS = (100.0, 60.0, 30.0, 10.0)
# Each family's norm before its channel MLP and the final norm before the head, by variable path, written from the
# official layouts (not from the blocks' channel_equalization declarations, which this checks).
CHANNEL_MLP_INPUT = {"LayerNorm_1": "channel_mixing/Dense_0", "norm2": "mlp/Dense_0",
                     "channel_norm": "channel_mlp/Dense_0", "pre_head_layer_norm": "head", "norm": "head"}
AFFINE = (("scale", "bias"), ("gamma", "beta"))  # LayerNorm, BatchNorm


def copy_of(model):
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def inject_outliers(model, factors=OUTLIER_FACTORS, seed=0):
    """A copy of `model` with outlier channels in every norm CHANNEL_MLP_INPUT names; returns (copy, norm paths)."""
    rng = np.random.default_rng(seed)
    model = copy_of(model)
    variables = {v.path: v for v in model.weights}
    injected = []
    for path in sorted(variables):
        prefix, _, name = path.rpartition("/")
        parent, _, norm = prefix.rpartition("/")
        if norm not in CHANNEL_MLP_INPUT or name not in ("scale", "gamma"):
            continue
        consumer = f"{parent}/{CHANNEL_MLP_INPUT[norm]}/kernel".lstrip("/")
        if consumer not in variables:  # e.g. AS-MLP's axial-shift norm2, which feeds conv3
            continue
        scale_name, bias_name = AFFINE[name == "gamma"]
        channels = variables[path].shape[0]
        factor = np.ones(channels, np.float32)
        factor[rng.choice(channels, len(factors), replace=False)] = factors
        for affine in (scale_name, bias_name):
            variable = variables[f"{prefix}/{affine}"]
            variable.assign(keras.ops.convert_to_numpy(variable) * factor)
        kernel = variables[consumer]
        kernel.assign(keras.ops.convert_to_numpy(kernel) / factor[:, None])
        injected.append(prefix)
    assert injected, f"no norm -> channel MLP pair found in {model.name}"
    return model, injected


def sqnr_db(reference, values):
    return float(10 * np.log10(np.sum(reference ** 2) / np.sum((reference - values) ** 2)))
