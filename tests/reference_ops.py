"""NumPy (float64, channels-last) building blocks for the reference forwards of the PyTorch-released families,
written from the spec sheets' op semantics. Independent of keras_mixer."""

import numpy as np
from scipy.special import erf


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def layer_norm(x, sd, prefix, eps=1e-5):
    """PyTorch LayerNorm over the last axis with `prefix.weight` / `prefix.bias`."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * sd[prefix + ".weight"] + sd[prefix + ".bias"]


def linear(x, sd, prefix):
    """PyTorch Linear: weight (out, in), optional bias, on the last axis."""
    y = x @ sd[prefix + ".weight"].T
    return y + sd[prefix + ".bias"] if prefix + ".bias" in sd else y


def mlp(x, sd, prefix):
    """fc1 -> exact GELU -> fc2 (the timm / official `Mlp`)."""
    return linear(gelu(linear(x, sd, prefix + ".fc1")), sd, prefix + ".fc2")


def patch_conv(x, weight, bias):
    """Conv2d with kernel = stride (OIHW weight) on NHWC input."""
    b, h, w, c = x.shape
    k = weight.shape[2]
    patches = x.reshape(b, h // k, k, w // k, k, c)
    return np.einsum("ocyx,biyjxc->bijo", weight, patches) + bias


def random_state_dict(rng, shapes):
    """Random float32 arrays for {key: shape}: fan-in scaled weights, norm weights near 1, small biases."""
    out = {}
    for key, shape in shapes.items():
        if len(shape) > 1:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        else:
            value = rng.normal(1 if "norm" in key and key.endswith("weight") else 0, 0.1, shape)
        out[key] = value.astype(np.float32)
    return out


# --- the authors' input pipelines --------------------------------------------------------------------------------
# ViP, AS-MLP, Hire-MLP and RaftMLP were trained and evaluated on torchvision's ToTensor() + Normalize(mean, std)
# with timm's IMAGENET_DEFAULT_MEAN / _STD (copied from timm/data/constants.py, not from keras_mixer)
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


def random_pixels(shape, seed=1):
    """uint8 RGB images, NHWC: what a user starts from."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def authors_normalize(pixels, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
    """ToTensor() (pixels / 255) then Normalize(mean, std), per channel, in float64 (NHWC)."""
    return (np.asarray(pixels, np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
