"""An MLP-Mixer forward pass in NumPy (float64), written from the paper's equations and the official Flax module's
parameter layout — not from keras_mixer — for parity tests.

Parameters are a dict keyed by the official checkpoint names ('stem/kernel', 'MixerBlock_0/token_mixing/Dense_0/kernel',
...), kernels stored (in, out) and the stem HWIO, as in the released .npz files.
"""

import numpy as np
from scipy.special import erf


def gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def mlp(x, params, prefix, form):
    h = gelu(x @ params[f"{prefix}/Dense_0/kernel"] + params[f"{prefix}/Dense_0/bias"], form)
    return h @ params[f"{prefix}/Dense_1/kernel"] + params[f"{prefix}/Dense_1/bias"]


def patchify(images, patch):
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C]: patches in row-major grid order, pixels in (row, col, channel) order."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def mixer_forward(params, images, patch, num_blocks, form, include_head=True, final_norm=True):
    images = np.asarray(images, np.float64)
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    stem = params["stem/kernel"]
    x = patchify(images, patch) @ stem.reshape(-1, stem.shape[-1]) + params["stem/bias"]
    for i in range(num_blocks):
        p = f"MixerBlock_{i}"
        y = layer_norm(x, params[f"{p}/LayerNorm_0/scale"], params[f"{p}/LayerNorm_0/bias"])
        x = x + mlp(y.transpose(0, 2, 1), params, f"{p}/token_mixing", form).transpose(0, 2, 1)
        y = layer_norm(x, params[f"{p}/LayerNorm_1/scale"], params[f"{p}/LayerNorm_1/bias"])
        x = x + mlp(y, params, f"{p}/channel_mixing", form)
    if not final_norm:  # the stem and blocks only (for models that continue with other blocks)
        return x
    x = layer_norm(x, params["pre_head_layer_norm/scale"], params["pre_head_layer_norm/bias"])
    if not include_head:
        return x
    return x.mean(axis=1) @ params["head/kernel"] + params["head/bias"]


def random_params(rng, patch, channels_in, hidden, tokens, tokens_mlp, channels_mlp, blocks, classes):
    """Random parameters in the official layout; norms are perturbed away from 1/0 so a wrong mapping shows."""
    shapes = {"stem/kernel": (patch, patch, channels_in, hidden), "stem/bias": (hidden,)}
    for i in range(blocks):
        p = f"MixerBlock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            shapes[f"{p}/{norm}/scale"] = (hidden,)
            shapes[f"{p}/{norm}/bias"] = (hidden,)
        for name, width, mlp_dim in (("token_mixing", tokens, tokens_mlp), ("channel_mixing", hidden, channels_mlp)):
            shapes[f"{p}/{name}/Dense_0/kernel"] = (width, mlp_dim)
            shapes[f"{p}/{name}/Dense_0/bias"] = (mlp_dim,)
            shapes[f"{p}/{name}/Dense_1/kernel"] = (mlp_dim, width)
            shapes[f"{p}/{name}/Dense_1/bias"] = (width,)
    shapes.update({"pre_head_layer_norm/scale": (hidden,), "pre_head_layer_norm/bias": (hidden,)})
    shapes.update({"head/kernel": (hidden, classes), "head/bias": (classes,)})
    params = {}
    for key, shape in shapes.items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        scale = 1.0 / np.sqrt(fan_in) if key.endswith("kernel") else 0.1
        value = rng.normal(0.0, scale, shape)
        params[key] = (1.0 + value if key.endswith("scale") else value).astype(np.float32)
    return params
