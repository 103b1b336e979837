"""MLP-Mixer (Tolstikhin et al., 2021): the model, its official variants and keras.applications-style builders.

Layer and variable names follow the official Flax release (`stem`, `MixerBlock_{i}/token_mixing/Dense_0`,
`pre_head_layer_norm`, `head`), so official checkpoints map by name.
"""

import math
import os
import re

import numpy as np

from keras_mixer import weights as weights_lib
from keras_mixer.errors import WeightsError
from keras_mixer.weights.pretrained import PretrainedWeights, register_releases
from keras_mixer.layers import LayerNorm, MixerBlock, PatchEmbedding
from keras_mixer.layers.input_normalization import INCEPTION, UNIT_RANGE, fold_into_stem
from keras_mixer.models.applications import (
    check_arguments,
    finish_model,
    image_input,
    token_head,
    trained_normalization,
    variant_builder,
)
from keras_mixer.weights.token_resize import RESIZE_METHODS

CONFIG_KEYS = ("patch_size", "hidden_dim", "num_blocks", "tokens_mlp_dim", "channels_mlp_dim")


def _config(patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim):
    return dict(patch_size=patch_size, hidden_dim=hidden_dim, num_blocks=num_blocks, tokens_mlp_dim=tokens_mlp_dim,
                channels_mlp_dim=channels_mlp_dim)


# variant: the official config's fields (vit_jax configs/models.py; S and H from big_vision models/mlp_mixer.py)
MIXER_VARIANTS = {
    "mixer_s32": _config(patch_size=32, hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_s16": _config(patch_size=16, hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_s8": _config(patch_size=8, hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_b32": _config(patch_size=32, hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "mixer_b16": _config(patch_size=16, hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "mixer_l32": _config(patch_size=32, hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "mixer_l16": _config(patch_size=16, hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "mixer_h14": _config(patch_size=14, hidden_dim=1280, num_blocks=32, tokens_mlp_dim=640, channels_mlp_dim=5120),
    # Edge-TPU-sized, not a paper's: its int8 weights (5.1 M) fit the Edge TPU's ~8 MiB parameter cache at 224
    "mixer_edgetpu": _config(patch_size=16, hidden_dim=256, num_blocks=8, tokens_mlp_dim=128, channels_mlp_dim=1024),
}
TOKEN_MIXING = "MixerBlock_{}/token_mixing/Dense_{}/{}"


# --- released checkpoints ------------------------------------------------------------------------------------------
# Official `.npz` files from the vit_jax release (gs://mixer_models); `.pth` files from timm's releases.

GOOGLE = "https://storage.googleapis.com/mixer_models"
TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"


def _official(variant, tag, folder, classes=1000, top1=None):
    name = {"mixer_s8": "S_8", "mixer_s16": "S_16", "mixer_s32": "S_32", "mixer_b16": "B_16",
            "mixer_b32": "B_32", "mixer_l16": "L_16"}[variant]
    return PretrainedWeights(variant, tag, f"{GOOGLE}/{folder}/Mixer-{name}.npz", None, "tanh", classes, top1)


MIXER_RELEASES = [
    # Google's official .npz (tanh GELU, inputs in [-1, 1]: big_vision's value_range(-1, 1)).
    _official("mixer_b16", "imagenet1k", "imagenet1k", top1=76.616),
    _official("mixer_l16", "imagenet1k", "imagenet1k", top1=72.084),
    _official("mixer_b16", "imagenet21k", "imagenet21k", classes=21843),
    _official("mixer_l16", "imagenet21k", "imagenet21k", classes=21843),
    _official("mixer_b16", "sam", "sam"),
    _official("mixer_b32", "sam", "sam"),
    *(_official(v, "gsam", "gsam") for v in ("mixer_s8", "mixer_s16", "mixer_s32", "mixer_b16", "mixer_b32")),
    # timm's PyTorch conversions (exact-erf GELU in timm, but converted from the tanh-trained JAX weights; timm's
    # config for them: mean = std = 0.5, i.e. [-1, 1]).
    PretrainedWeights("mixer_b16", "goog_in21k_ft_in1k", f"{TIMM}/v0.1-vitjx/jx_mixer_b16_224-76587d61.pth",
                      "76587d61", "tanh", 1000, 76.616),
    PretrainedWeights("mixer_l16", "goog_in21k_ft_in1k", f"{TIMM}/v0.1-vitjx/jx_mixer_l16_224-92f9adc4.pth",
                      "92f9adc4", "tanh", 1000, 72.084),
    PretrainedWeights("mixer_b16", "goog_in21k", f"{TIMM}/v0.1-vitjx/jx_mixer_b16_224_in21k-617b3de2.pth",
                      "617b3de2", "tanh", 21843),
    PretrainedWeights("mixer_l16", "goog_in21k", f"{TIMM}/v0.1-vitjx/jx_mixer_l16_224_in21k-846aa33c.pth",
                      "846aa33c", "tanh", 21843),
    # Alibaba MIIL's ImageNet-21k-P pre-training, fine-tuned on 1k; trained on [0, 1] inputs (timm's config: mean 0,
    # std 1) with exact GELU.
    PretrainedWeights("mixer_b16", "miil_in21k_ft_in1k", f"{TIMM}/v0.1-tresnet/mixer_b16_224_miil-9229a591.pth",
                      "9229a591", "exact", 1000, 82.314, normalization=UNIT_RANGE),
]
# "imagenet": the most accurate 1000-class checkpoint of each variant. Where no top-1 is confirmed (SAM/GSAM), GSAM
# is chosen: its paper reports it above SAM for every model it trains.
register_releases(MIXER_RELEASES, imagenet={
    "mixer_b16": "miil_in21k_ft_in1k",  # 82.3 (timm) vs 76.6 for Google's imagenet1k
    "mixer_l16": "imagenet1k",  # 72.1: the only 1000-class L/16 release
    "mixer_b32": "gsam",
    "mixer_s32": "gsam",
    "mixer_s16": "gsam",
    "mixer_s8": "gsam",
})


# --- checkpoint filters: other layouts -> official names (which are our variable paths) -----------------------

_TIMM_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(norm1|norm2|mlp_tokens\.fc1|mlp_tokens\.fc2|mlp_channels\.fc1|mlp_channels\.fc2)\.(weight|bias)")
_TIMM_BLOCK_PARTS = {
    "norm1": "LayerNorm_0", "norm2": "LayerNorm_1",
    "mlp_tokens.fc1": "token_mixing/Dense_0", "mlp_tokens.fc2": "token_mixing/Dense_1",
    "mlp_channels.fc1": "channel_mixing/Dense_0", "mlp_channels.fc2": "channel_mixing/Dense_1",
}
_TIMM_TOP_KEYS = {"stem.proj": "stem", "norm": "pre_head_layer_norm", "head": "head"}


def timm_to_official(state_dict, source="checkpoint"):
    """Maps a timm `MlpMixer` state_dict onto official names: conv OIHW -> HWIO, linear (out, in) -> (in, out),
    norm `weight` -> `scale`."""
    params = {}
    for key, value in state_dict.items():
        block = _TIMM_BLOCK_KEY.fullmatch(key)
        module, _, kind = key.rpartition(".")
        if block:
            name = f"MixerBlock_{block[1]}/{_TIMM_BLOCK_PARTS[block[2]]}"
        elif module in _TIMM_TOP_KEYS and kind in ("weight", "bias"):
            name = _TIMM_TOP_KEYS[module]
        else:
            raise WeightsError(f"{source}: unexpected key {key!r} for a timm MLP-Mixer state_dict")
        is_norm = "LayerNorm" in name or name == "pre_head_layer_norm"
        if kind == "bias":
            params[f"{name}/bias"] = value
        elif is_norm:
            params[f"{name}/scale"] = value
        else:
            params[f"{name}/kernel"] = weights_lib.keras_kernel(value)
    return params


def official_to_timm(params):
    """The inverse of `timm_to_official`: official-layout parameters (e.g. `{v.path: value for v in model.weights}`)
    as a timm `MlpMixer` state_dict of float32 arrays (what the benchmarks load into timm for same-weights runs)."""
    modules = {official: timm for timm, official in _TIMM_TOP_KEYS.items()}
    modules.update({part: timm for timm, part in _TIMM_BLOCK_PARTS.items()})
    state_dict = {}
    for path, value in params.items():
        module, kind = path.rsplit("/", 1)
        block = re.fullmatch(r"MixerBlock_(\d+)/(.+)", module)
        name = f"blocks.{block[1]}.{modules[block[2]]}" if block else modules[module]
        value = np.asarray(value, np.float32)
        if kind == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        state_dict[f"{name}.{'bias' if kind == 'bias' else 'weight'}"] = np.ascontiguousarray(value)
    return state_dict


def official_params(raw, source):
    """Official-layout parameters from a checkpoint in official (`stem/kernel`) or timm (`stem.proj.weight`) layout."""
    if "stem/kernel" in raw:
        params = dict(raw)
    elif "stem.proj.weight" in raw:
        params = timm_to_official(raw, source)
    else:
        raise WeightsError(
            f"{source}: not an MLP-Mixer checkpoint: no 'stem/kernel' (official) or 'stem.proj.weight' (timm) key; "
            f"first keys: {sorted(raw)[:5]}"
        )
    token_mixing = TOKEN_MIXING.format(0, 0, "kernel")  # sizes the model's token MLPs: read before any check
    if np.ndim(params.get(token_mixing)) != 2:
        raise WeightsError(f"{source}: needs a 2-D {token_mixing!r} (the first token-mixing kernel), got "
                           f"{'no such key' if token_mixing not in params else np.shape(params[token_mixing])}")
    return params


def infer_config(params, source="checkpoint"):
    """The MLPMixer arguments (config, input_shape, classes) that a checkpoint in official layout was built for."""
    try:
        patch, _, channels_in, hidden = params["stem/kernel"].shape
        num_blocks = len([k for k in params if re.fullmatch(r"MixerBlock_\d+/LayerNorm_0/scale", k)])
        tokens, tokens_mlp_dim = params[TOKEN_MIXING.format(0, 0, "kernel")].shape
        channels_mlp_dim = params["MixerBlock_0/channel_mixing/Dense_0/kernel"].shape[1]
    except (KeyError, ValueError) as error:
        raise WeightsError(f"{source}: cannot infer the Mixer config ({error})") from error
    side = _square_grid(tokens, source)[0] * patch
    config = _config(patch, hidden, num_blocks, tokens_mlp_dim, channels_mlp_dim)
    classes = params["head/kernel"].shape[1] if "head/kernel" in params else None
    return config, (side, side, channels_in), classes


def _square_grid(tokens, source):
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise WeightsError(f"{source}: {tokens} tokens is not a square patch grid; cannot tell the checkpoint's grid")
    return side, side


def variant_of(config):
    """The registered variant name whose official config equals `config`, or None."""
    values = {k: config[k] for k in CONFIG_KEYS}
    return next((name for name, v in MIXER_VARIANTS.items() if v == values), None)


def read_mixer_checkpoint(weights, variant, checkpoint_normalization=None):
    """(official-layout params, the GELU form it was trained with, a description of the source) for a released tag
    or a checkpoint path. Official-layout files are the JAX releases (tanh GELU); timm-layout files default to
    timm's exact GELU. A checkpoint trained on another normalization than [-1, 1] (the release's record, or
    `checkpoint_normalization`; files by path: [-1, 1], as the official and timm's Google releases) has it folded
    into the stem, which is an unpadded patch convolution: exact."""
    normalization = trained_normalization(weights, variant, INCEPTION, checkpoint_normalization)
    if weights_lib.is_checkpoint_path(weights):
        path = source = str(weights)
        raw = weights_lib.read_checkpoint(path)
        params, gelu = official_params(raw, path), "tanh" if "stem/kernel" in raw else "exact"
    else:
        release = weights_lib.resolve(variant, weights)
        path = weights_lib.released_file(variant, weights)
        params, gelu = official_params(weights_lib.read_checkpoint(path), path), release.gelu
        source = f"{variant} weights {weights!r} ({path})"
    if normalization is not None:
        params["stem/kernel"], params["stem/bias"] = fold_into_stem(params["stem/kernel"], params["stem/bias"],
                                                                    normalization)
    return params, gelu, source


def fit_checkpoint(params, model, grid, token_mixing_resize, source):
    """Adapts a checkpoint to the model: drops the head the model does not have (silently with include_top=False,
    with a warning when the class count differs) and resizes the token-mixing MLPs to the model's token count."""
    params = weights_lib.match_head(params, model, source)
    old_tokens = params[TOKEN_MIXING.format(0, 0, "kernel")].shape[0]
    if old_tokens == grid[0] * grid[1]:
        return params
    if token_mixing_resize not in RESIZE_METHODS:
        raise WeightsError(
            f"{source} was trained with {old_tokens} tokens, the model has {grid[0] * grid[1]} "
            f"({grid[0]}x{grid[1]} patches): pass token_mixing_resize='block_diagonal' (the Mixer paper's "
            "initialization; the grid must be an integer multiple) or 'interpolate' (bilinear over the patch grid, "
            "not official)"
        )
    old_grid = _square_grid(old_tokens, source)
    block = 0
    while TOKEN_MIXING.format(block, 0, "kernel") in params:
        keys = [TOKEN_MIXING.format(block, d, k) for d, k in ((0, "kernel"), (0, "bias"), (1, "kernel"), (1, "bias"))]
        resized = RESIZE_METHODS[token_mixing_resize](*(params[k] for k in keys), old_grid, grid)
        params.update(zip(keys, resized))
        block += 1
    return params


def MLPMixer(
    patch_size,
    hidden_dim,
    num_blocks,
    tokens_mlp_dim,
    channels_mlp_dim,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    drop_path_rate=0.0,
    dropout_rate=0.0,
    gelu=None,
    token_mixing_resize=None,
    checkpoint_normalization=None,
    name="mlp_mixer",
):
    """Builds an MLP-Mixer from the official config fields plus the keras.applications arguments.

    Args:
        patch_size: the official config, one to one (as `hidden_dim`, `num_blocks`, `tokens_mlp_dim` and
            `channels_mlp_dim`): the side of the square patches.
        hidden_dim: the channels of every token.
        num_blocks: how many Mixer blocks.
        tokens_mlp_dim: the hidden width of the token-mixing MLPs.
        channels_mlp_dim: the hidden width of the channel-mixing MLPs.
        include_top: end with pre-head LayerNorm -> mean over tokens -> dropout -> `head` Dense (zero-initialized).
        weights: None; a released tag ("imagenet", "imagenet1k", "imagenet21k", "sam", "gsam", timm's
            "goog_in21k_ft_in1k", "goog_in21k", "miil_in21k_ft_in1k" — see `keras_mixer.list_pretrained`); or a local
            file: an official `.npz`, a timm `.pth`/`.bin`/`.safetensors`, or a Keras `.weights.h5`/`.keras`.
            Released files are cached under ~/.keras/keras_mixer; offline, put them in $KERAS_MIXER_WEIGHTS_DIR.
        input_tensor: optional Keras tensor (or backend tensor) to use as the image input.
        input_shape: (height, width, channels); default (224, 224, 3). Height and width must be multiples of
            `patch_size`; the token count (H/p)·(W/p) fixes the token-mixing MLP's width.
        pooling: with `include_top=False`: None returns the normalized token grid [batch, H/p, W/p, hidden_dim];
            "avg" / "max" pool over tokens to [batch, hidden_dim].
        classes: size of the head.
        classifier_activation: activation of the head (None or "linear" gives logits).
        drop_path_rate: stochastic depth, rising linearly from 0 at the first block to this rate at the last.
        dropout_rate: dropout inside the MLPs and before the head.
        gelu: "tanh" (official checkpoints, Flax default) or "exact" (timm). Default: the form of the weights loaded.
        token_mixing_resize: how to load a checkpoint trained with another token count: "block_diagonal" (the
            Mixer paper's higher-resolution initialization: one copy of the token MLP per tile of the old grid, so
            `tokens_mlp_dim` grows by the number of tiles) or "interpolate" (bilinear over the patch grid; not
            official, works for smaller sizes too).
        checkpoint_normalization: (mean, std) per RGB channel on [0, 1] pixels (timm's convention) that the
            checkpoint in `weights` was trained on. Default: the release's (`MIXER_RELEASES`), or
            [-1, 1] for a file. The model always takes `preprocess_input`'s [-1, 1]; another normalization is
            folded into the stem, exactly.
        name: model name.
    """
    check_arguments(pooling, weights, include_top, classifier_activation, classes, drop_path_rate, dropout_rate)
    images, input_shape = image_input(input_tensor, input_shape)
    stem = PatchEmbedding(patch_size, hidden_dim, name="stem")
    rows, cols = stem.grid_shape((None,) + input_shape)

    checkpoint = None
    if weights is not None and not weights_lib.is_keras_file(weights):
        config = _config(patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim)
        checkpoint, trained_gelu, source = read_mixer_checkpoint(weights, variant_of(config), checkpoint_normalization)
        gelu = gelu or trained_gelu
        old_tokens = checkpoint[TOKEN_MIXING.format(0, 0, "kernel")].shape[0]
        if token_mixing_resize == "block_diagonal" and (rows * cols) % old_tokens == 0:
            tokens_mlp_dim *= rows * cols // old_tokens  # one copy of the token MLP per tile
    elif checkpoint_normalization is not None:
        trained_normalization(weights, None, INCEPTION, checkpoint_normalization)  # refuses it without a checkpoint
    gelu = gelu or "tanh"

    x = stem(images)
    for i in range(num_blocks):
        x = MixerBlock(
            tokens_mlp_dim,
            channels_mlp_dim,
            gelu=gelu,
            drop_path_rate=drop_path_rate * i / max(num_blocks - 1, 1),
            dropout_rate=dropout_rate,
            name=f"MixerBlock_{i}",
        )(x)
    x = LayerNorm(name="pre_head_layer_norm")(x)

    x = token_head(x, (rows, cols), include_top, pooling, classes, classifier_activation, dropout_rate)

    model = finish_model(images, input_tensor, x, name)
    if checkpoint is not None:
        weights_lib.assign_by_path(model, fit_checkpoint(checkpoint, model, (rows, cols), token_mixing_resize, source), source)
    elif weights is not None:
        weights_lib.load_keras_weights(model, weights)
    return model


# A Mixer small enough to train in seconds on 2 CPU cores (the digits demo, `keras-mixer train` on digits, tests):
# 32x32 inputs in 8x8 patches of 4x4 pixels -> 64 tokens.
DIGITS_MIXER = dict(patch_size=4, hidden_dim=64, num_blocks=4, tokens_mlp_dim=32, channels_mlp_dim=128)


def build_digits_mixer(image_size=32, classes=10, **kwargs):
    """The digits demo's Mixer (88,010 parameters at 32x32, 10 classes), logits out."""
    return MLPMixer(**DIGITS_MIXER, input_shape=(image_size, image_size, 3), classes=classes,
                    classifier_activation=None, name="mixer_digits", **kwargs)


def convert_checkpoint(source, destination, gelu=None, checkpoint_normalization=None):
    """Converts an official `.npz` or timm `.pth`/`.safetensors` Mixer checkpoint to a Keras `.keras` model or
    `.weights.h5` file (written atomically). The architecture is read off the checkpoint's shapes; the
    normalization it was trained on (`checkpoint_normalization`, else timm's config.json beside it, else [-1, 1])
    is folded into the stem, so the model takes `preprocess_input`'s [-1, 1]."""
    from keras_mixer.io_utils import atomic_path, folder_given_as_model, output_problem

    destination = str(destination)
    if weights_lib.is_keras_file(source):
        raise WeightsError(f"{source}: already a Keras file; convert reads official .npz and timm .pth/.bin/"
                           ".safetensors Mixer checkpoints (load a .keras with keras.models.load_model)")
    if os.path.isdir(source):
        raise WeightsError(folder_given_as_model(source, weights_lib.CHECKPOINT_SUFFIXES, "checkpoint file"))
    if not weights_lib.is_checkpoint_path(source):
        raise WeightsError(f"{source}: convert reads official .npz and timm .pth/.bin/.safetensors Mixer checkpoints; "
                           f"this is not one of them")
    if not weights_lib.is_keras_file(destination):
        raise WeightsError(f"{destination}: the output must end in .keras or .weights.h5")
    if problem := output_problem(destination):  # before reading and converting a checkpoint of up to 2 GB
        raise WeightsError(f"{destination} {problem}")
    params, trained_gelu, source = read_mixer_checkpoint(str(source), variant=None,
                                                         checkpoint_normalization=checkpoint_normalization)
    config, input_shape, classes = infer_config(params, source)
    model = MLPMixer(
        **config, input_shape=input_shape, include_top=classes is not None, classes=classes or 1000,
        classifier_activation=None, gelu=gelu or trained_gelu, name=variant_of(config) or "mlp_mixer",
    )
    weights_lib.assign_by_path(model, params, source, progress=True)
    with atomic_path(destination) as tmp:
        model.save(tmp) if destination.endswith(".keras") else model.save_weights(tmp)
    return model


MixerS32, MixerS16, MixerS8, MixerB32, MixerB16, MixerL32, MixerL16, MixerH14, MixerEdgeTPU = (
    variant_builder(variant, function, MLPMixer, MIXER_VARIANTS[variant],
                    "Pretrained tags: keras_mixer.list_pretrained(variant).")
    for variant, function in (
        ("mixer_s32", "MixerS32"),
        ("mixer_s16", "MixerS16"),
        ("mixer_s8", "MixerS8"),
        ("mixer_b32", "MixerB32"),
        ("mixer_b16", "MixerB16"),
        ("mixer_l32", "MixerL32"),
        ("mixer_l16", "MixerL16"),
        ("mixer_h14", "MixerH14"),
        ("mixer_edgetpu", "MixerEdgeTPU"),
    )
)
