"""RaftMLP (Tatsunami & Taki, 2021): four levels, each a cross-scale embedding followed by raft token-mixing
blocks; the token-mixing widths depend on the grid, so a model is built for one input size.

NHWC, LayerNorm eps 1e-5, exact GELU. Level i's embedding is `levels_{i}_embedding` and its blocks
`levels_{i}_blocks_{j}`; `official_to_keras` maps the authors' `levels.{i}.fn.{k}` Sequential indices onto them.
"""

import re

import numpy as np

from keras_mixer.errors import KerasMixerError
from keras_mixer import weights as weights_lib
from keras_mixer.layers import CrossScaleEmbedding, LayerNorm, RaftBlock
from keras_mixer.layers.input_normalization import IMAGENET_DEFAULT
from keras_mixer.models.applications import (
    check_arguments,
    feature_map_model,
    image_input,
    normalized_input,
    trained_normalization,
    variant_builder,
)

# The authors trained and evaluated on ImageNet mean / std (libs/datasets.py ImageNetGetter's transforms). The first
# embedding's larger kernels pad after that normalization, so it is an explicit InputNormalization step
AUTHORS_NORMALIZATION = IMAGENET_DEFAULT


def _levels(dims):
    """The released level layout (depths 2, 2, 6, 2; patch 4 then 2; raft size 2) for the four widths."""
    kernels = ((4, 8), (2, 4), (2, 4), (2,))
    return tuple({"depth": depth, "dim": dim, "patch_size": 4 if i == 0 else 2, "raft_size": 2,
                  "embedding_kernels": kernels[i]} for i, (depth, dim) in enumerate(zip((2, 2, 6, 2), dims)))


# variant: the official config's fields (the authors' libs/models.py)
RAFT_MLP_VARIANTS = {
    "raft_mlp_small": dict(layers=_levels((64, 128, 256, 512))),
    "raft_mlp_medium": dict(layers=_levels((96, 192, 384, 768))),
    "raft_mlp_large": dict(layers=_levels((128, 192, 512, 1024))),
    # Edge-TPU-sized, not a paper's: its int8 weights (5.8 M) fit the Edge TPU's ~8 MiB parameter cache at 224
    "raft_mlp_edgetpu": dict(layers=_levels((48, 96, 192, 384))),
}
# names registered before the registry's naming rule (keras_mixer.models.registry), kept as aliases
RAFT_MLP_FORMER_NAMES = {
    "raft_mlp_small": ("raft_mlp_s",),
    "raft_mlp_medium": ("raft_mlp_m",),
    "raft_mlp_large": ("raft_mlp_l",),
}


def RaftMLP(
    layers=RAFT_MLP_VARIANTS["raft_mlp_small"]["layers"],
    token_expansion_factor=2,
    channel_expansion_factor=4,
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
    name="raft_mlp",
):
    """Builds a RaftMLP from the official config names: `layers`, a list of dicts with `depth, dim, patch_size,
    raft_size, embedding_kernels` (one per level), and `token_expansion_factor, channel_expansion_factor`; plus the
    keras.applications arguments. The input side must divide by the product of the patch sizes (224 -> 56, 28, 14,
    7 for the released models). With `include_top=False`, `return_stages=True` returns every level's map.
    `checkpoint_normalization`: the (mean, std) per RGB channel on [0, 1] pixels that a checkpoint in `weights` was
    trained on (default: the authors', ImageNet mean / std), applied by an `input_normalization` step: the model
    always takes `preprocess_input`'s [-1, 1].
    `dropout_rate`: dropout on the pooled features before the head (as timm's `drop_rate`; the recipes set it).
    """
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    images, input_shape = image_input(input_tensor, input_shape)
    normalization = trained_normalization(weights, name, AUTHORS_NORMALIZATION, checkpoint_normalization,
                                          input_shape[-1])
    stride = int(np.prod([level["patch_size"] for level in layers]))
    if input_shape[0] % stride or input_shape[1] % stride:
        raise KerasMixerError(f"Input size {input_shape[0]}x{input_shape[1]} must be a multiple of {stride} (the product "
                         "of the levels' patch sizes)")
    rates = np.linspace(0.0, drop_path_rate, sum(level["depth"] for level in layers))
    x, stages, block = normalized_input(images, normalization), [], 0
    for i, level in enumerate(layers):
        x = CrossScaleEmbedding(level["dim"], level["patch_size"], level["embedding_kernels"],
                                name=f"levels_{i}_embedding")(x)
        for j in range(level["depth"]):
            x = RaftBlock(level["raft_size"], token_expansion_factor, channel_expansion_factor, float(rates[block]),
                          name=f"levels_{i}_blocks_{j}")(x)
            block += 1
        stages.append(x)
    x = LayerNorm(1e-5, name="norm")(x)
    head = dict(include_top=include_top, return_stages=return_stages, pooling=pooling, classes=classes,
                classifier_activation=classifier_activation, dropout_rate=dropout_rate)
    return feature_map_model(images, input_tensor, x, stages, head, weights, official_to_keras, "RaftMLP", name)


# --- official checkpoints ----------------------------------------------------------------------------------------

# inside block `levels.{i}.fn.{2 + j}`: the Sequential index of each sub-module
_BLOCK_PARTS = {"1.norm.1": "vertical_norm", "1.fn.0": "vertical_mlp/Dense_0", "1.fn.3": "vertical_mlp/Dense_1",
                "3.norm.1": "horizontal_norm", "3.fn.0": "horizontal_mlp/Dense_0", "3.fn.3": "horizontal_mlp/Dense_1",
                "5.norm": "channel_norm", "5.fn.0": "channel_mlp/Dense_0", "5.fn.3": "channel_mlp/Dense_1"}


def _layer_path(module):
    if module == "heads.0.1":
        return "norm"
    if module == "classifier":
        return "head"
    embedding = re.fullmatch(r"levels\.(\d+)\.fn\.0\.fc", module)
    if embedding:
        return f"levels_{embedding[1]}_embedding"
    block = re.fullmatch(r"levels\.(\d+)\.fn\.(\d+)\.(.+)", module)
    if block and int(block[2]) >= 2 and block[3] in _BLOCK_PARTS:
        return f"levels_{block[1]}_blocks_{int(block[2]) - 2}/{_BLOCK_PARTS[block[3]]}"
    return module  # left with dots: reported as an unexpected key


def official_to_keras(state_dict, source="checkpoint"):
    """Maps the authors' state_dict onto our variable paths (linear (out, in) -> (in, out), LayerNorm weight ->
    scale; the embedding's (dim, in·Σk²) weight is kept as one (in·Σk², dim) kernel)."""
    return weights_lib.torch_state_dict_to_keras(state_dict, source, "RaftMLP", _layer_path, r"(^|[_/])norm$")


RaftMLPSmall, RaftMLPMedium, RaftMLPLarge, RaftMLPEdgeTPU = (
    variant_builder(variant, function, RaftMLP, RAFT_MLP_VARIANTS[variant],
                    former_names=RAFT_MLP_FORMER_NAMES.get(variant, ()))
    for variant, function in (("raft_mlp_small", "RaftMLPSmall"), ("raft_mlp_medium", "RaftMLPMedium"),
                              ("raft_mlp_large", "RaftMLPLarge"), ("raft_mlp_edgetpu", "RaftMLPEdgeTPU"))
)
