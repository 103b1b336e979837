"""Hire-MLP (Guo et al., 2021): a hierarchical all-MLP backbone mixing tokens by hierarchical rearrangement.

NHWC, BatchNorm (torch eps 1e-5, momentum 0.1), exact GELU. Layer names mirror the official state_dict, whose
`network.{k}` list interleaves stages and downsamples (stage 0 -> network.0, downsample -> network.1, stage 1 ->
network.2, ...): blocks are `network_{k}_{j}`, downsamples `network_{k}`.
"""

import re

import keras
import numpy as np

from keras_mixer.errors import KerasMixerError
from keras_mixer import weights as weights_lib
from keras_mixer.layers import HireBlock
from keras_mixer.layers.input_normalization import IMAGENET_DEFAULT
from keras_mixer.weights.pretrained import PretrainedWeights, register_releases
from keras_mixer.models.applications import (
    CHANNELS_LAST,
    check_arguments,
    feature_map_model,
    image_input,
    normalized_input,
    trained_normalization,
    variant_builder,
)

# variant: the official config's fields (the authors' mlp_based/hire_mlp.py); all share pixel (4, 3, 3, 2),
# step_stride (2, 2, 3, 2), step_dilation (2, 2, 1, 1) and mlp ratio 4
HIRE_MLP_VARIANTS = {
    "hire_mlp_tiny": dict(layers=(2, 2, 4, 2), embed_dims=(64, 128, 320, 512)),
    "hire_mlp_small": dict(layers=(3, 4, 10, 3), embed_dims=(64, 128, 320, 512)),
    "hire_mlp_base": dict(layers=(4, 6, 24, 3), embed_dims=(64, 128, 320, 512)),
    "hire_mlp_large": dict(layers=(4, 6, 24, 3), embed_dims=(96, 192, 384, 768)),
    # Edge-TPU-sized, not a paper's: its int8 weights (4.7 M) fit the Edge TPU's ~8 MiB parameter cache at 224
    "hire_mlp_edgetpu": dict(layers=(2, 2, 4, 2), embed_dims=(32, 64, 160, 256)),
}
# The authors trained and evaluated on timm's ImageNet mean / std (their mlp_based/hire_mlp.py default_cfg and
# datasets.py transforms). The stem pads by 2 after that normalization, so folding it into the stem would be wrong at
# the border: it is an explicit InputNormalization step
AUTHORS_NORMALIZATION = IMAGENET_DEFAULT


# Hire-MLP's authors publish their ImageNet-1k training checkpoints (model state_dict beside optimizer state and the
# run's argparse.Namespace) as release assets, without hashes. Paper top-1 at 224, ImageNet-1k from scratch; trained
# and evaluated on timm's ImageNet mean / std (the authors' mlp_based/hire_mlp.py default_cfg, datasets.py)
HIRE_MLP_URL = "https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log"
HIRE_MLP_RELEASES = [
    PretrainedWeights(f"hire_mlp_{size}", "imagenet1k", f"{HIRE_MLP_URL}/hire_mlp_{size}.pth", None, "exact", 1000,
                      top1, normalization=AUTHORS_NORMALIZATION)
    for size, top1 in (("tiny", 79.7), ("small", 82.1), ("base", 83.2))
]
register_releases(HIRE_MLP_RELEASES, imagenet={f"hire_mlp_{size}": "imagenet1k" for size in ("tiny", "small", "base")})


def _batch_norm(name):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)


def _conv_bn_relu(x, filters, kernel, stride, padding, name):
    x = keras.layers.ZeroPadding2D(padding, data_format=CHANNELS_LAST, name=f"{name}_pad")(x)  # torch's symmetric padding
    x = keras.layers.Conv2D(filters, kernel, strides=stride, data_format=CHANNELS_LAST, name=f"{name}_proj")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(_batch_norm(f"{name}_norm")(x))


def HireMLP(
    layers=(2, 2, 4, 2),
    embed_dims=(64, 128, 320, 512),
    mlp_ratios=4.0,
    pixel=(4, 3, 3, 2),
    step_stride=(2, 2, 3, 2),
    step_dilation=(2, 2, 1, 1),
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    drop_path_rate=0.0,
    dropout_rate=0.0,
    return_stages=False,
    checkpoint_normalization=None,
    name="hire_mlp",
):
    """Builds a Hire-MLP from the official config names (`layers, embed_dims, mlp_ratios, pixel, step_stride,
    step_dilation`) plus the keras.applications arguments. Block j of stage i shifts across regions by
    (j mod step_stride[i]) * step_dilation[i]; sizes not divisible by `pixel` are padded circularly, so any input
    of at least 32x32 works. With `include_top=False`, `return_stages=True` returns the four stage outputs
    (strides 4, 8, 16, 32). `checkpoint_normalization`: the (mean, std) per RGB channel on [0, 1] pixels that a
    checkpoint in `weights` was trained on (default: the release's / the authors', timm's ImageNet mean / std),
    applied by an `input_normalization` step: the model always takes `preprocess_input`'s [-1, 1].
    `dropout_rate`: dropout on the pooled features before the head (as timm's `drop_rate`; the recipes set it).
    """
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    images, input_shape = image_input(input_tensor, input_shape)
    normalization = trained_normalization(weights, name, AUTHORS_NORMALIZATION, checkpoint_normalization,
                                          input_shape[-1])
    if min(input_shape[:2]) < 32:
        raise KerasMixerError(f"Input size {input_shape[0]}x{input_shape[1]} is below Hire-MLP's minimum of 32x32")
    ratios = mlp_ratios if isinstance(mlp_ratios, (list, tuple)) else (mlp_ratios,) * len(layers)
    x = _conv_bn_relu(normalized_input(images, normalization), embed_dims[0], 7, 4, 2, "patch_embed")
    rates = np.linspace(0.0, drop_path_rate, sum(layers))
    stages, block = [], 0
    for i, depth in enumerate(layers):
        for j in range(depth):
            step = (j % step_stride[i]) * step_dilation[i]
            x = HireBlock(pixel[i], step, ratios[i], float(rates[block]), name=f"network_{2 * i}_{j}")(x)
            block += 1
        stages.append(x)
        if i < len(layers) - 1:
            x = _conv_bn_relu(x, embed_dims[i + 1], 3, 2, 1, f"network_{2 * i + 1}")
    x = _batch_norm("norm")(x)
    head = dict(include_top=include_top, return_stages=return_stages, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, dropout_rate=dropout_rate)
    return feature_map_model(images, input_tensor, x, stages, head, weights, official_to_keras, "Hire-MLP", name)


# --- official checkpoints ----------------------------------------------------------------------------------------

_NORM_MODULE = r"(^|[_/])(norm\d*|mlp_[hw]1_norm)$"



def HireMLPModel(*args, **kwargs):
    """Deprecated name of `HireMLP` (every other family builder is named like its family)."""
    import warnings

    warnings.warn("HireMLPModel is deprecated: use keras_mixer.HireMLP", DeprecationWarning, stacklevel=2)
    return HireMLP(*args, **kwargs)

def _layer_path(module):
    path = re.sub(r"^network\.(\d+)\.(\d+)\.", r"network_\1_\2/", module)
    path = re.sub(r"^network\.(\d+)\.(proj|norm)$", r"network_\1_\2", path)
    path = path.replace("patch_embed.", "patch_embed_").replace("attn.", "attn/").replace("reweight.", "reweight/")
    return path.replace("mlp.fc1", "mlp/Dense_0").replace("mlp.fc2", "mlp/Dense_1")


def official_to_keras(state_dict, source="checkpoint"):
    """Maps the authors' state_dict onto our variable paths (conv OIHW -> HWIO, 1x1 conv / linear -> Dense,
    BatchNorm weight/bias/running stats -> gamma/beta/moving_*; num_batches_tracked is dropped)."""
    return weights_lib.torch_state_dict_to_keras(state_dict, source, "Hire-MLP", _layer_path, _NORM_MODULE,
                                                 weights_lib.BATCH_NORM_VARIABLES)


HireMLPTiny, HireMLPSmall, HireMLPBase, HireMLPLarge, HireMLPEdgeTPU = (
    variant_builder(variant, function, HireMLP, HIRE_MLP_VARIANTS[variant])
    for variant, function in (
        ("hire_mlp_tiny", "HireMLPTiny"),
        ("hire_mlp_small", "HireMLPSmall"),
        ("hire_mlp_base", "HireMLPBase"),
        ("hire_mlp_large", "HireMLPLarge"),
        ("hire_mlp_edgetpu", "HireMLPEdgeTPU"),
    )
)
