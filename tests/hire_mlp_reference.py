"""Hire-MLP forward in NumPy (float64, channels-first, BatchNorm in inference mode), written from the spec's
steps, on a state_dict with the official key names. Independent of keras_mixer."""

import numpy as np
from scipy.special import erf


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def bn(x, sd, prefix, eps=1e-5):
    shape = (1, -1, 1, 1)
    return ((x - sd[prefix + ".running_mean"].reshape(shape)) / np.sqrt(sd[prefix + ".running_var"].reshape(shape) + eps)
            * sd[prefix + ".weight"].reshape(shape) + sd[prefix + ".bias"].reshape(shape))


def conv(x, weight, bias, stride=1, padding=0):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_c, _, kh, kw = weight.shape
    h = (x.shape[2] - kh) // stride + 1
    w = (x.shape[3] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_c, h, w))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * h : stride, j : j + stride * w : stride]
            y += np.einsum("oc,bchw->bohw", weight[:, :, i, j], patch)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def fc(x, sd, prefix, bias=True):
    return conv(x, sd[prefix + ".weight"], sd.get(prefix + ".bias") if bias else None)


def hire(x, sd, a, pixel, step):
    b, c, h, w = x.shape
    branches = []
    for dim, name in ((2, "h"), (3, "w")):
        length = x.shape[dim]
        y = np.roll(x, step, axis=dim) if step else x
        pad = (-length) % pixel
        if pad:
            y = np.concatenate([y, np.take(y, range(pad), axis=dim)], axis=dim)
        padded = y.shape[dim]
        if dim == 2:  # t[b, c*p + k, r, w] = y[b, c, r*p + k, w]
            t = y.reshape(b, c, padded // pixel, pixel, w).transpose(0, 1, 3, 2, 4).reshape(b, c * pixel, padded // pixel, w)
        else:
            t = y.reshape(b, c, h, padded // pixel, pixel).transpose(0, 1, 4, 2, 3).reshape(b, c * pixel, h, padded // pixel)
        t = np.maximum(bn(fc(t, sd, f"{a}.mlp_{name}1", bias=False), sd, f"{a}.mlp_{name}1_norm"), 0)
        t = fc(t, sd, f"{a}.mlp_{name}2")
        if dim == 2:
            y = t.reshape(b, c, pixel, padded // pixel, w).transpose(0, 1, 3, 2, 4).reshape(b, c, padded, w)[:, :, :length]
        else:
            y = t.reshape(b, c, pixel, h, padded // pixel).transpose(0, 1, 3, 4, 2).reshape(b, c, h, padded)[:, :, :, :length]
        branches.append(np.roll(y, -step, axis=dim) if step else y)
    h_out, w_out = branches
    c_out = fc(x, sd, f"{a}.mlp_c")
    att = (h_out + w_out + c_out).mean(axis=(2, 3), keepdims=True)
    att = fc(gelu(fc(att, sd, f"{a}.reweight.fc1")), sd, f"{a}.reweight.fc2").reshape(b, c, 3)
    att = np.exp(att - att.max(-1, keepdims=True))
    att = (att / att.sum(-1, keepdims=True)).transpose(2, 0, 1)[..., None, None]
    return fc(h_out * att[0] + w_out * att[1] + c_out * att[2], sd, f"{a}.proj")


def hire_mlp_forward(sd, images_nhwc, layers, pixel, step_stride, step_dilation):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(images_nhwc, np.float64).transpose(0, 3, 1, 2)
    x = np.maximum(bn(conv(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], 4, 2), sd, "patch_embed.norm"), 0)
    for i, depth in enumerate(layers):
        for j in range(depth):
            p = f"network.{2 * i}.{j}"
            step = (j % step_stride[i]) * step_dilation[i]
            x = x + hire(bn(x, sd, p + ".norm1"), sd, p + ".attn", pixel[i], step)
            x = x + fc(gelu(fc(bn(x, sd, p + ".norm2"), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")
        if i < len(layers) - 1:
            d = f"network.{2 * i + 1}"
            x = np.maximum(bn(conv(x, sd[d + ".proj.weight"], sd[d + ".proj.bias"], 2, 1), sd, d + ".norm"), 0)
    x = bn(x, sd, "norm").mean(axis=(2, 3))
    return x @ sd["head.weight"].T + sd["head.bias"]


def random_state_dict(rng, layers, dims, pixel, classes):
    shapes = {"patch_embed.proj.weight": (dims[0], 3, 7, 7), "patch_embed.proj.bias": (dims[0],)}
    norms = {"patch_embed.norm": dims[0]}
    for i, depth in enumerate(layers):
        c, p = dims[i], pixel[i]
        for j in range(depth):
            q = f"network.{2 * i}.{j}"
            norms[q + ".norm1"] = norms[q + ".norm2"] = c
            for n in ("h", "w"):
                shapes[f"{q}.attn.mlp_{n}1.weight"] = (c // 2, c * p, 1, 1)
                norms[f"{q}.attn.mlp_{n}1_norm"] = c // 2
                shapes[f"{q}.attn.mlp_{n}2.weight"], shapes[f"{q}.attn.mlp_{n}2.bias"] = (c * p, c // 2, 1, 1), (c * p,)
            for name, out_c, in_c in (("mlp_c", c, c), ("reweight.fc1", c // 4, c), ("reweight.fc2", 3 * c, c // 4),
                                      ("proj", c, c)):
                shapes[f"{q}.attn.{name}.weight"], shapes[f"{q}.attn.{name}.bias"] = (out_c, in_c, 1, 1), (out_c,)
            shapes[q + ".mlp.fc1.weight"], shapes[q + ".mlp.fc1.bias"] = (4 * c, c, 1, 1), (4 * c,)
            shapes[q + ".mlp.fc2.weight"], shapes[q + ".mlp.fc2.bias"] = (c, 4 * c, 1, 1), (c,)
        if i < len(layers) - 1:
            d = f"network.{2 * i + 1}"
            shapes[d + ".proj.weight"], shapes[d + ".proj.bias"] = (dims[i + 1], c, 3, 3), (dims[i + 1],)
            norms[d + ".norm"] = dims[i + 1]
    norms["norm"] = dims[-1]
    shapes["head.weight"], shapes["head.bias"] = (classes, dims[-1]), (classes,)
    sd = {}
    for key, shape in shapes.items():
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        sd[key] = rng.normal(0, 1 / np.sqrt(fan_in) if len(shape) > 1 else 0.1, shape).astype(np.float32)
    for prefix, c in norms.items():
        sd[prefix + ".weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[prefix + ".bias"] = rng.normal(0, 0.1, c).astype(np.float32)
        sd[prefix + ".running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[prefix + ".running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        sd[prefix + ".num_batches_tracked"] = np.array(7, np.int64)
    return sd
