"""MLP-Mixer (Tolstikhin et al., 2021): the model, its official variants and keras.applications-style builders.

Layer and variable names follow the official Flax release (`stem`, `MixerBlock_{i}/token_mixing/Dense_0`,
`pre_head_layer_norm`, `head`), so official checkpoints map by name.
"""

import keras

from keras_mixer.layers import LayerNorm, MixerBlock, PatchEmbedding
from keras_mixer.models.registry import register_variant
from keras_mixer.weights import default_gelu_for, load_weights

# name: (patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim), the official configs
# (vit_jax configs/models.py; S and H from big_vision models/mlp_mixer.py).
MIXER_VARIANTS = {
    "mixer_s32": (32, 512, 8, 256, 2048),
    "mixer_s16": (16, 512, 8, 256, 2048),
    "mixer_s8": (8, 512, 8, 256, 2048),
    "mixer_b32": (32, 768, 12, 384, 3072),
    "mixer_b16": (16, 768, 12, 384, 3072),
    "mixer_l32": (32, 1024, 24, 512, 4096),
    "mixer_l16": (16, 1024, 24, 512, 4096),
    "mixer_h14": (14, 1280, 32, 640, 5120),
}
CONFIG_KEYS = ("patch_size", "hidden_dim", "num_blocks", "tokens_mlp_dim", "channels_mlp_dim")
POOLING_MODES = (None, "avg", "max")


def _image_input(input_tensor, input_shape):
    """The model's image input, as keras.applications does it: a new Input, or one wrapping `input_tensor`."""
    if input_tensor is None:
        return keras.Input(shape=input_shape, name="images")
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor
    return keras.Input(tensor=input_tensor, shape=input_shape, name="images")


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
    name="mlp_mixer",
):
    """Builds an MLP-Mixer from the official config fields plus the keras.applications arguments.

    Args:
        patch_size, hidden_dim, num_blocks, tokens_mlp_dim, channels_mlp_dim: the official config, one to one.
        include_top: end with pre-head LayerNorm -> mean over tokens -> dropout -> `head` Dense (zero-initialized).
        weights: None, or a local weights file (`.weights.h5`, `.keras`).
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
        name: model name.
    """
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    gelu = gelu or default_gelu_for(weights)
    input_shape = tuple(input_shape or (224, 224, 3))
    if input_tensor is not None and input_tensor.shape[1:] is not None:
        input_shape = tuple(input_tensor.shape[1:])

    images = _image_input(input_tensor, input_shape)
    stem = PatchEmbedding(patch_size, hidden_dim, name="stem")
    rows, cols = stem.grid_shape((None,) + input_shape)
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

    if include_top:
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        x = keras.layers.Dense(
            classes, kernel_initializer="zeros", activation=classifier_activation, name="head"
        )(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    else:
        x = keras.layers.Reshape((rows, cols, hidden_dim), name="token_grid")(x)

    inputs = keras.utils.get_source_inputs(images) if input_tensor is not None else images
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights)
    return model


def feature_extractor(model, as_grid=True):
    """A model sharing `model`'s weights that returns every Mixer block's output, in order.

    Like timm's `forward_intermediates`: with `as_grid` each output is a [batch, H/p, W/p, C] map (NHWC), otherwise
    the raw [batch, tokens, C] tokens.
    """
    blocks = [layer for layer in model.layers if isinstance(layer, MixerBlock)]
    if not blocks:
        raise ValueError(f"model {model.name!r} has no MixerBlock layers")
    outputs = [block.output for block in blocks]
    if as_grid:
        stem = next(layer for layer in model.layers if isinstance(layer, PatchEmbedding))
        rows, cols = stem.grid_shape(stem.input.shape)
        outputs = [keras.layers.Reshape((rows, cols, out.shape[-1]))(out) for out in outputs]
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def _variant_builder(variant, function_name):
    config = dict(zip(CONFIG_KEYS, MIXER_VARIANTS[variant]))

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=None,
        drop_path_rate=0.0,
        dropout_rate=0.0,
        gelu=None,
    ):
        return MLPMixer(
            **config,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            drop_path_rate=drop_path_rate,
            dropout_rate=dropout_rate,
            gelu=gelu,
            name=name or variant,
        )

    builder.__name__ = builder.__qualname__ = function_name
    builder.__doc__ = (
        f"{function_name}: MLP-Mixer with {', '.join(f'{k}={v}' for k, v in config.items())}.\n\n"
        "Arguments as `keras_mixer.MLPMixer` (keras.applications signature)."
    )
    return register_variant(variant, builder)


MixerS32 = _variant_builder("mixer_s32", "MixerS32")
MixerS16 = _variant_builder("mixer_s16", "MixerS16")
MixerS8 = _variant_builder("mixer_s8", "MixerS8")
MixerB32 = _variant_builder("mixer_b32", "MixerB32")
MixerB16 = _variant_builder("mixer_b16", "MixerB16")
MixerL32 = _variant_builder("mixer_l32", "MixerL32")
MixerL16 = _variant_builder("mixer_l16", "MixerL16")
MixerH14 = _variant_builder("mixer_h14", "MixerH14")
