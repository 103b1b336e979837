"""AS-MLP (Lian et al., 2021): a hierarchical all-MLP backbone whose token mixing is an axial shift of channels.

Layout NHWC; GroupNorm(1) everywhere (our LayerNorm over H, W, C); exact GELU. Layer names mirror the official
state_dict (`patch_embed.proj` -> `patch_embed_proj`, `layers.0.blocks.1` -> `layers_0_blocks_1`, ...) and
`official_to_keras` maps a checkpoint onto our variable paths.
"""

import re

import keras
import numpy as np

from keras_mixer.errors import KerasMixerError
from keras_mixer import weights as weights_lib
from keras_mixer.layers import ASMLPBlock, LayerNorm, PatchMerging
from keras_mixer.layers.input_normalization import IMAGENET_DEFAULT
from keras_mixer.models.applications import (
    CHANNELS_LAST,
    check_arguments,
    feature_map_model,
    folding_normalization,
    image_input,
    trained_normalization,
    variant_builder,
)

# variant: the official config's fields (the authors' configs/*.yaml); patch 4, shift 5, mlp ratio 4 for all. The
# authors trained T / S / B with drop_path_rate 0.2 / 0.3 / 0.5 (pass it to fine-tune as they did)
AS_MLP_VARIANTS = {
    "as_mlp_tiny": dict(embed_dim=96, depths=(2, 2, 6, 2)),
    "as_mlp_small": dict(embed_dim=96, depths=(2, 2, 18, 2)),
    "as_mlp_base": dict(embed_dim=128, depths=(2, 2, 18, 2)),
    # Edge-TPU-sized, not a paper's: its int8 weights (5.1 M) fit the Edge TPU's ~8 MiB parameter cache at 224
    "as_mlp_edgetpu": dict(embed_dim=40, depths=(2, 2, 6, 2)),
}
# names registered before the registry's naming rule (keras_mixer.models.registry), kept as aliases
AS_MLP_FORMER_NAMES = {
    "as_mlp_tiny": ("as_mlp_t",),
    "as_mlp_small": ("as_mlp_s",),
    "as_mlp_base": ("as_mlp_b",),
}
# The authors trained and evaluated on timm's ImageNet mean / std (their data/build.py transforms); the patch
# embedding is an unpadded conv, so it is folded into it exactly
AUTHORS_NORMALIZATION = IMAGENET_DEFAULT
GROUP_NORM = (1, 2, 3)  # normalize over H, W and C: GroupNorm with one group
EPSILON = 1e-5


def ASMLP(
    embed_dim=96,
    depths=(2, 2, 6, 2),
    shift_size=5,
    patch_size=4,
    mlp_ratio=4.0,
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
    name="as_mlp",
):
    """Builds an AS-MLP from the official config names (`embed_dim, depths, shift_size, patch_size, mlp_ratio`)
    plus the keras.applications arguments.

    `input_shape` must give an image whose side divided by `patch_size` halves evenly at each of the
    len(depths) - 1 downsamplings (224 -> 56, 28, 14, 7). With `include_top=False`, `return_stages=True` returns
    every stage's feature map (strides 4, 8, 16, 32: what detection / segmentation necks take); otherwise the final
    normalized map, or its `pooling`. `weights`: None, a `.pth`/`.safetensors` official checkpoint, or a Keras file.
    `checkpoint_normalization`: the (mean, std) per RGB channel on [0, 1] pixels that checkpoint was trained on
    (default: the authors', timm's ImageNet mean / std), folded into the patch embedding: the model always takes
    `preprocess_input`'s [-1, 1].
    `dropout_rate`: dropout on the pooled features before the head (as timm's `drop_rate`; the recipes set it).
    """
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    images, input_shape = image_input(input_tensor, input_shape)
    normalization = trained_normalization(weights, name, AUTHORS_NORMALIZATION, checkpoint_normalization,
                                          input_shape[-1])
    stride = patch_size * 2 ** (len(depths) - 1)
    if input_shape[0] % stride or input_shape[1] % stride:
        raise KerasMixerError(
            f"Input size {input_shape[0]}x{input_shape[1]} must be a multiple of {stride} (patch {patch_size} "
            f"and {len(depths) - 1} 2x downsamplings)"
        )
    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, data_format=CHANNELS_LAST,
                            name="patch_embed_proj")(images)
    x = LayerNorm(EPSILON, axis=GROUP_NORM, name="patch_embed_norm")(x)
    rates = np.linspace(0.0, drop_path_rate, sum(depths))
    stages, block = [], 0
    for i, depth in enumerate(depths):
        for j in range(depth):
            x = ASMLPBlock(shift_size, mlp_ratio, float(rates[block]), epsilon=EPSILON, name=f"layers_{i}_blocks_{j}")(x)
            block += 1
        stages.append(x)
        if i < len(depths) - 1:
            x = PatchMerging(GROUP_NORM, EPSILON, name=f"layers_{i}_downsample")(x)
    x = LayerNorm(EPSILON, axis=GROUP_NORM, name="norm")(x)
    head = dict(include_top=include_top, return_stages=return_stages, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, dropout_rate=dropout_rate)
    convert = folding_normalization(official_to_keras, "patch_embed_proj", normalization)
    return feature_map_model(images, input_tensor, x, stages, head, weights, convert, "AS-MLP", name)


# --- official checkpoints ----------------------------------------------------------------------------------------

def _layer_path(module):
    path = re.sub(r"^layers\.(\d+)\.blocks\.(\d+)\.", r"layers_\1_blocks_\2/", module)
    path = re.sub(r"^layers\.(\d+)\.downsample\.", r"layers_\1_downsample/", path)
    path = path.replace("patch_embed.", "patch_embed_").replace("axial_shift.", "axial_shift/")
    return path.replace("mlp.fc1", "mlp/Dense_0").replace("mlp.fc2", "mlp/Dense_1")


def official_to_keras(state_dict, source="checkpoint"):
    """Maps the authors' state_dict (channels-first, 1x1 convs) onto our variable paths."""
    return weights_lib.torch_state_dict_to_keras(state_dict, source, "AS-MLP", _layer_path, r"(^|[_/])norm\d*$")


ASMLPTiny, ASMLPSmall, ASMLPBase, ASMLPEdgeTPU = (
    variant_builder(variant, function, ASMLP, AS_MLP_VARIANTS[variant],
                    former_names=AS_MLP_FORMER_NAMES.get(variant, ()))
    for variant, function in (("as_mlp_tiny", "ASMLPTiny"), ("as_mlp_small", "ASMLPSmall"),
                              ("as_mlp_base", "ASMLPBase"), ("as_mlp_edgetpu", "ASMLPEdgeTPU"))
)
