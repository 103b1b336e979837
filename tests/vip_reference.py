"""Vision Permutator forward in NumPy from the spec sheet (Weighted Permute-MLP, blocks, downsamples, head), on a
state_dict with the official key names."""

import numpy as np

from reference_ops import layer_norm, linear, mlp, patch_conv, random_state_dict, softmax


def weighted_permute_mlp(x, sd, p, segment_dim):
    b, h, w, c = x.shape
    s = c // segment_dim
    grouped = x.reshape(b, h, w, segment_dim, s)
    height = grouped.transpose(0, 3, 2, 1, 4).reshape(b, segment_dim, w, h * s) @ sd[p + "mlp_h.weight"].T
    height = height.reshape(b, segment_dim, w, h, s).transpose(0, 3, 2, 1, 4).reshape(b, h, w, c)
    width = grouped.transpose(0, 1, 3, 2, 4).reshape(b, h, segment_dim, w * s) @ sd[p + "mlp_w.weight"].T
    width = width.reshape(b, h, segment_dim, w, s).transpose(0, 1, 3, 2, 4).reshape(b, h, w, c)
    channel = x @ sd[p + "mlp_c.weight"].T
    a = mlp((height + width + channel).mean(axis=(1, 2)), sd, p + "reweight")
    a = softmax(a.reshape(b, c, 3), axis=-1)[:, None, None]
    return linear(height * a[..., 0] + width * a[..., 1] + channel * a[..., 2], sd, p + "proj")


def vip_forward(sd, images, layers, dims, segment_dim, transitions, patch, skip_lam=1.0):
    sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = patch_conv(np.asarray(images, np.float64), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"])
    k = 0
    for i, depth in enumerate(layers):
        for j in range(depth):
            p = f"network.{k}.{j}."
            x = x + weighted_permute_mlp(layer_norm(x, sd, p + "norm1"), sd, p + "attn.", segment_dim[i]) / skip_lam
            x = x + mlp(layer_norm(x, sd, p + "norm2"), sd, p + "mlp") / skip_lam
        k += 1
        if i < len(layers) - 1 and (transitions[i] or dims[i] != dims[i + 1]):
            x = patch_conv(x, sd[f"network.{k}.proj.weight"], sd[f"network.{k}.proj.bias"])
            k += 1
    return linear(layer_norm(x, sd, "norm").mean(axis=(1, 2)), sd, "head")


def vip_state_dict(rng, layers, dims, transitions, patch, classes, mlp_ratio=3):
    """Random arrays with the official ViP key names and shapes (spec: official state_dict keys)."""
    shapes = {"patch_embed.proj.weight": (dims[0], 3, patch, patch), "patch_embed.proj.bias": (dims[0],)}
    k = 0
    for i, depth in enumerate(layers):
        c = dims[i]
        for j in range(depth):
            p = f"network.{k}.{j}."
            for norm in ("norm1", "norm2"):
                shapes[f"{p}{norm}.weight"] = shapes[f"{p}{norm}.bias"] = (c,)
            for name in ("mlp_c", "mlp_h", "mlp_w"):
                shapes[f"{p}attn.{name}.weight"] = (c, c)
            shapes.update({f"{p}attn.reweight.fc1.weight": (c // 4, c), f"{p}attn.reweight.fc1.bias": (c // 4,),
                           f"{p}attn.reweight.fc2.weight": (3 * c, c // 4), f"{p}attn.reweight.fc2.bias": (3 * c,),
                           f"{p}attn.proj.weight": (c, c), f"{p}attn.proj.bias": (c,),
                           f"{p}mlp.fc1.weight": (mlp_ratio * c, c), f"{p}mlp.fc1.bias": (mlp_ratio * c,),
                           f"{p}mlp.fc2.weight": (c, mlp_ratio * c), f"{p}mlp.fc2.bias": (c,)})
        k += 1
        if i < len(layers) - 1 and (transitions[i] or dims[i] != dims[i + 1]):
            stride = 2 if transitions[i] else 1
            shapes[f"network.{k}.proj.weight"] = (dims[i + 1], c, stride, stride)
            shapes[f"network.{k}.proj.bias"] = (dims[i + 1],)
            k += 1
    c = dims[-1]
    shapes.update({"norm.weight": (c,), "norm.bias": (c,), "head.weight": (classes, c), "head.bias": (classes,)})
    return random_state_dict(rng, shapes)
