"""AS-MLP forward in NumPy (float64, channels-first like the authors' code), written from the spec's semantics,
on a state_dict with the official key names. Independent of keras_mixer."""

import math

import numpy as np
from scipy.special import erf


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def group_norm1(x, weight, bias, eps=1e-5):  # x: [B, C, H, W], one group
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def conv1x1(x, weight, bias=None):  # weight (out, in, 1, 1)
    y = np.einsum("oi,bihw->bohw", weight[:, :, 0, 0], x)
    return y if bias is None else y + bias[None, :, None, None]


def shift(x, shift_size, dim, dilation=1):
    """out[c, h, w] = in[c, h, w - d] (dim=3) or in[c, h - d, w] (dim=2), group g = c // ceil(C/s), d = g - s//2."""
    _, channels, height, width = x.shape
    out = np.zeros_like(x)
    group = math.ceil(channels / shift_size)
    for c in range(channels):
        d = (c // group - shift_size // 2) * dilation
        for i in range(x.shape[dim]):
            src = i - d
            if 0 <= src < x.shape[dim]:
                if dim == 3:
                    out[:, c, :, i] = x[:, c, :, src]
                else:
                    out[:, c, i, :] = x[:, c, src, :]
    return out


def as_mlp_forward(sd, images_nhwc, depths, shift_size=5, patch=4):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(images_nhwc, np.float64).transpose(0, 3, 1, 2)
    b, c, h, w = x.shape
    weight = sd["patch_embed.proj.weight"]
    patches = x.reshape(b, c, h // patch, patch, w // patch, patch)
    x = np.einsum("ocyx,bciyjx->boij", weight, patches) + sd["patch_embed.proj.bias"][None, :, None, None]
    x = group_norm1(x, sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"])
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            a = p + "axial_shift."
            y = group_norm1(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"])
            y = gelu(group_norm1(conv1x1(y, sd[a + "conv1.weight"], sd[a + "conv1.bias"]),
                                 sd[a + "norm1.weight"], sd[a + "norm1.bias"]))
            horizontal = gelu(conv1x1(shift(y, shift_size, 3), sd[a + "conv2_1.weight"], sd[a + "conv2_1.bias"]))
            vertical = gelu(conv1x1(shift(y, shift_size, 2), sd[a + "conv2_2.weight"], sd[a + "conv2_2.bias"]))
            y = group_norm1(horizontal + vertical, sd[a + "norm2.weight"], sd[a + "norm2.bias"])
            x = x + conv1x1(y, sd[a + "conv3.weight"], sd[a + "conv3.bias"])
            y = group_norm1(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"])
            y = gelu(conv1x1(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
            x = x + conv1x1(y, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        if i < len(depths) - 1:
            d = f"layers.{i}.downsample."
            x = np.concatenate([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], 1)
            x = conv1x1(group_norm1(x, sd[d + "norm.weight"], sd[d + "norm.bias"]), sd[d + "reduction.weight"])
    x = group_norm1(x, sd["norm.weight"], sd["norm.bias"]).mean(axis=(2, 3))
    return x @ sd["head.weight"].T + sd["head.bias"]


def random_state_dict(rng, embed, depths, classes, in_ch=3, patch=4, mlp_ratio=4):
    """Random arrays with the official key names and shapes (spec: AS-MLP state_dict keys)."""
    sd = {"patch_embed.proj.weight": (embed, in_ch, patch, patch), "patch_embed.proj.bias": (embed,),
          "patch_embed.norm.weight": (embed,), "patch_embed.norm.bias": (embed,)}
    c = embed
    for i, depth in enumerate(depths):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            for norm in ("norm1", "norm2", "axial_shift.norm1", "axial_shift.norm2"):
                sd[p + norm + ".weight"], sd[p + norm + ".bias"] = (c,), (c,)
            for conv in ("conv1", "conv2_1", "conv2_2", "conv3"):
                sd[p + f"axial_shift.{conv}.weight"], sd[p + f"axial_shift.{conv}.bias"] = (c, c, 1, 1), (c,)
            sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = (mlp_ratio * c, c, 1, 1), (mlp_ratio * c,)
            sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = (c, mlp_ratio * c, 1, 1), (c,)
        if i < len(depths) - 1:
            d = f"layers.{i}.downsample."
            sd[d + "reduction.weight"] = (2 * c, 4 * c, 1, 1)
            sd[d + "norm.weight"], sd[d + "norm.bias"] = (4 * c,), (4 * c,)
            c *= 2
    sd.update({"norm.weight": (c,), "norm.bias": (c,), "head.weight": (classes, c), "head.bias": (classes,)})
    out = {}
    for key, shape in sd.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        value = rng.normal(0, 1 / np.sqrt(fan_in) if len(shape) > 1 else 0.1, shape)
        out[key] = (1 + value if key.endswith("norm.weight") or ".norm1.weight" in key or ".norm2.weight" in key
                    else value).astype(np.float32)
    return out
