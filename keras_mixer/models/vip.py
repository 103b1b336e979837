"""Vision Permutator (Hou et al., 2021): a Mixer-like stack whose token mixing permutes height / width into the
channels (Weighted Permute-MLP).

NHWC, LayerNorm eps 1e-5, exact GELU. Layer names mirror the official state_dict, whose `network.{k}` list holds
the stages and, between two stages, a downsample (2x2 stride-2 conv) or 1x1 projection when the width changes:
blocks are `network_{k}_{j}`, those convs `network_{k}_proj`. The authors' checkpoints are on Google Drive (links in
the README); pass the downloaded `.pth` as `weights=`.
"""

import re

import keras
import numpy as np

from keras_mixer import weights as weights_lib
from keras_mixer.errors import KerasMixerError
from keras_mixer.layers import LayerNorm, PermutatorBlock
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

# variant: the official config's fields (the authors' models/vip.py); mlp ratio 3 in every stage
VIP_VARIANTS = {
    "vip_small14": dict(patch_size=14, layers=(4, 3, 8, 3), embed_dims=(384, 384, 384, 384),
                        segment_dim=(16, 16, 16, 16), transitions=(False, False, False, False)),
    "vip_small7": dict(patch_size=7, layers=(4, 3, 8, 3), embed_dims=(192, 384, 384, 384),
                       segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
    "vip_medium7": dict(patch_size=7, layers=(4, 3, 14, 3), embed_dims=(256, 256, 512, 512),
                        segment_dim=(32, 32, 16, 16), transitions=(False, True, False, False)),
    "vip_large7": dict(patch_size=7, layers=(8, 8, 16, 4), embed_dims=(256, 512, 512, 512),
                       segment_dim=(32, 16, 16, 16), transitions=(True, False, False, False)),
    # Edge-TPU-sized, not a paper's: its int8 weights (4.4 M) fit the Edge TPU's ~8 MiB parameter cache at 224
    "vip_edgetpu": dict(patch_size=14, layers=(2, 2, 4, 2), embed_dims=(192, 192, 192, 192),
                        segment_dim=(16, 16, 16, 16), transitions=(False, False, False, False)),
}
# names registered before the registry's naming rule (keras_mixer.models.registry), kept as aliases
VIP_FORMER_NAMES = {
    "vip_small14": ("vip_s14",),
    "vip_small7": ("vip_s7",),
    "vip_medium7": ("vip_m7",),
    "vip_large7": ("vip_l7",),
}
# The authors trained and evaluated on timm's ImageNet mean / std (their models/vip.py default_cfg, read by main.py's
# data config); the patch embedding is an unpadded conv, so it is folded into it exactly
AUTHORS_NORMALIZATION = IMAGENET_DEFAULT


def VisionPermutator(
    layers=(4, 3, 8, 3),
    embed_dims=(192, 384, 384, 384),
    transitions=(True, False, False, False),
    segment_dim=(32, 16, 16, 16),
    mlp_ratios=(3, 3, 3, 3),
    patch_size=7,
    skip_lam=1.0,
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
    name="vip",
):
    """Builds a Vision Permutator from the official config names (`layers, embed_dims, transitions, segment_dim,
    mlp_ratios, patch_size, skip_lam`) plus the keras.applications arguments.

    Stage i's grid must be segment_dim[i] x segment_dim[i] (224 / 7 = 32 for the /7 models, 224 / 14 = 16 for
    S/14); `transitions[i]` halves the grid after stage i. With `include_top=False`, `return_stages=True` returns
    every stage's map; otherwise the normalized final map or its `pooling`. `weights`: None, an official
    `.pth`/`.safetensors` checkpoint, or a Keras file. `checkpoint_normalization`: the (mean, std) per RGB channel
    on [0, 1] pixels that checkpoint was trained on (default: the authors', timm's ImageNet mean / std), folded
    into the patch embedding: the model always takes `preprocess_input`'s [-1, 1].
    `dropout_rate`: dropout on the pooled features before the head (as timm's `drop_rate`; the recipes set it).
    """
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    images, input_shape = image_input(input_tensor, input_shape)
    # the permute MLPs mix along height and width with weights as wide as the grid, so the config fixes the input
    # size; the stage's own refusal named a grid and segment_dim, not the input size to give
    side = patch_size * segment_dim[0]
    if all(isinstance(length, int) for length in input_shape[:2]) and tuple(input_shape[:2]) != (side, side):
        raise KerasMixerError(f"Input size {input_shape[0]}x{input_shape[1]}: this Vision Permutator takes "
                              f"{side}x{side} (patch_size {patch_size} x segment_dim {segment_dim[0]}, its first "
                              "stage's grid); for another size, scale every stage's segment_dim with it")
    normalization = trained_normalization(weights, name, AUTHORS_NORMALIZATION, checkpoint_normalization,
                                          input_shape[-1])
    x = keras.layers.Conv2D(embed_dims[0], patch_size, strides=patch_size, data_format=CHANNELS_LAST,
                            name="patch_embed_proj")(images)
    rates = np.linspace(0.0, drop_path_rate, sum(layers))
    stages, block, k = [], 0, 0
    for i, depth in enumerate(layers):
        for j in range(depth):
            x = PermutatorBlock(segment_dim[i], mlp_ratios[i], skip_lam, float(rates[block]),
                                name=f"network_{k}_{j}")(x)
            block += 1
        stages.append(x)
        k += 1
        if i < len(layers) - 1 and (transitions[i] or embed_dims[i] != embed_dims[i + 1]):
            if transitions[i]:
                x = keras.layers.Conv2D(embed_dims[i + 1], 2, strides=2, data_format=CHANNELS_LAST,
                                        name=f"network_{k}_proj")(x)
            else:  # the official 1x1 conv, as a Dense over channels
                x = keras.layers.Dense(embed_dims[i + 1], name=f"network_{k}_proj")(x)
            k += 1
    x = LayerNorm(1e-5, name="norm")(x)
    head = dict(include_top=include_top, return_stages=return_stages, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, dropout_rate=dropout_rate)
    convert = folding_normalization(official_to_keras, "patch_embed_proj", normalization)
    return feature_map_model(images, input_tensor, x, stages, head, weights, convert, "Vision Permutator", name)


# --- official checkpoints ----------------------------------------------------------------------------------------


def _layer_path(module):
    path = re.sub(r"^network\.(\d+)\.(\d+)\.", r"network_\1_\2/", module)
    path = re.sub(r"^network\.(\d+)\.proj$", r"network_\1_proj", path)
    path = path.replace("patch_embed.", "patch_embed_").replace("attn.", "attn/").replace("reweight.", "reweight/")
    return path.replace("mlp.fc1", "mlp/Dense_0").replace("mlp.fc2", "mlp/Dense_1")


def official_to_keras(state_dict, source="checkpoint"):
    """Maps the authors' state_dict onto our variable paths (conv OIHW -> HWIO, linear (out, in) -> (in, out),
    LayerNorm weight -> scale)."""
    return weights_lib.torch_state_dict_to_keras(state_dict, source, "Vision Permutator", _layer_path,
                                                 r"(^|[_/])norm\d*$")


(VisionPermutatorSmall14, VisionPermutatorSmall7, VisionPermutatorMedium7, VisionPermutatorLarge7,
 VisionPermutatorEdgeTPU) = (
    variant_builder(variant, function, VisionPermutator, VIP_VARIANTS[variant],
                    former_names=VIP_FORMER_NAMES.get(variant, ()))
    for variant, function in (
        ("vip_small14", "VisionPermutatorSmall14"),
        ("vip_small7", "VisionPermutatorSmall7"),
        ("vip_medium7", "VisionPermutatorMedium7"),
        ("vip_large7", "VisionPermutatorLarge7"),
        ("vip_edgetpu", "VisionPermutatorEdgeTPU"),
    )
)
