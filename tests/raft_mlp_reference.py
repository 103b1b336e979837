"""RaftMLP forward in NumPy from the spec sheet (Unfold-based cross-scale embedding, raft blocks on tokens,
head), on a state_dict with the official key names."""

import numpy as np

from reference_ops import gelu, layer_norm, linear, random_state_dict

def unfold(x, k, stride, pad):
    """torch.nn.Unfold on NCHW: [B, C·k·k, L] with rows ordered (channel, kernel row, kernel column)."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    b, c, h, w = x.shape
    out_h, out_w = (h - k) // stride + 1, (w - k) // stride + 1
    cols = np.zeros((b, c, k, k, out_h, out_w))
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = x[:, :, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
    return cols.reshape(b, c * k * k, out_h * out_w), out_h, out_w


def embed(x_nchw, sd, prefix, patch, kernels):
    columns = []
    for k in kernels:
        cols, h, w = unfold(x_nchw, k, patch, (k - patch) // 2)
        columns.append(cols)
    tokens = np.concatenate(columns, axis=1).transpose(0, 2, 1)  # [B, h·w, in·Σk²]
    return linear(tokens, sd, prefix), h, w


def raft_mixing(tokens, sd, prefix, h, w, r, vertical):
    """Steps 1-4 of the spec for one direction: shrink to rafts, pre-norm over channels in (i_o, i_r) order,
    MLP over (i_r, h) (vertical) or (i_r, w) (horizontal), back to tokens."""
    b, _, c = tokens.shape
    o = c // r
    x = tokens.reshape(b, h, w, r, o)  # channel index i_r·o + i_o
    normed = layer_norm(x.transpose(0, 1, 2, 4, 3).reshape(b, h, w, c), sd, prefix + ".norm.1")
    normed = normed.reshape(b, h, w, o, r)  # [b, h, w, i_o, i_r]
    if vertical:
        grid = normed.transpose(0, 3, 2, 4, 1).reshape(b, o * w, r * h)  # rows (i_o, w), columns (i_r, h)
        mixed = sequential_mlp(grid, sd, prefix + ".fn").reshape(b, o, w, r, h).transpose(0, 4, 2, 3, 1)
    else:
        grid = normed.transpose(0, 3, 1, 4, 2).reshape(b, o * h, r * w)  # rows (i_o, h), columns (i_r, w)
        mixed = sequential_mlp(grid, sd, prefix + ".fn").reshape(b, o, h, r, w).transpose(0, 2, 4, 3, 1)
    return tokens + mixed.reshape(b, h * w, c)  # [b, h, w, i_r, i_o] -> channel i_r·o + i_o


def sequential_mlp(x, sd, prefix):
    """The official Sequential(Linear, GELU, Dropout, Linear): `prefix.0` and `prefix.3`."""
    return linear(gelu(linear(x, sd, prefix + ".0")), sd, prefix + ".3")


def raft_mlp_forward(sd, images, levels):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = np.asarray(images, np.float64).transpose(0, 3, 1, 2)
    for i, level in enumerate(levels):
        tokens, h, w = embed(x, sd, f"levels.{i}.fn.0.fc", level["patch_size"], level["embedding_kernels"])
        for j in range(level["depth"]):
            p = f"levels.{i}.fn.{2 + j}."
            tokens = raft_mixing(tokens, sd, p + "1", h, w, level["raft_size"], vertical=True)
            tokens = raft_mixing(tokens, sd, p + "3", h, w, level["raft_size"], vertical=False)
            tokens = tokens + sequential_mlp(layer_norm(tokens, sd, p + "5.norm"), sd, p + "5.fn")
        x = tokens.reshape(tokens.shape[0], h, w, -1).transpose(0, 3, 1, 2)
    pooled = layer_norm(x.transpose(0, 2, 3, 1), sd, "heads.0.1").mean(axis=(1, 2))
    return linear(pooled, sd, "classifier")


def raft_mlp_state_dict(rng, levels, image_size, classes, token_expansion=2, channel_expansion=4, in_ch=3):
    """Random arrays with the official RaftMLP key names and shapes (spec: official state_dict keys)."""
    shapes, size = {}, image_size
    for i, level in enumerate(levels):
        c, r = level["dim"], level["raft_size"]
        size //= level["patch_size"]
        shapes[f"levels.{i}.fn.0.fc.weight"] = (c, in_ch * sum(k * k for k in level["embedding_kernels"]))
        shapes[f"levels.{i}.fn.0.fc.bias"] = (c,)
        for j in range(level["depth"]):
            p = f"levels.{i}.fn.{2 + j}."
            for part, norm, width, hidden in (("1", "1.norm.1", r * size, token_expansion * r * size),
                                              ("3", "3.norm.1", r * size, token_expansion * r * size),
                                              ("5", "5.norm", c, channel_expansion * c)):
                shapes[p + norm + ".weight"] = shapes[p + norm + ".bias"] = (c,)
                shapes.update({f"{p}{part}.fn.0.weight": (hidden, width), f"{p}{part}.fn.0.bias": (hidden,),
                               f"{p}{part}.fn.3.weight": (width, hidden), f"{p}{part}.fn.3.bias": (width,)})
        in_ch = c
    shapes.update({"heads.0.1.weight": (in_ch,), "heads.0.1.bias": (in_ch,), "classifier.weight": (classes, in_ch),
                   "classifier.bias": (classes,)})
    return random_state_dict(rng, shapes)
