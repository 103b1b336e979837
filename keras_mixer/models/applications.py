"""What every model family shares: the keras.applications-style input, classifier tail and variant builders.

Every model is channels-last (NHWC) whatever `keras.config.image_data_format()` says: each layer that reads the
global setting is given `data_format="channels_last"` (a channels-first setting, common with the torch backend,
would otherwise pool over channels and size the head by the token count without an error).
"""

import os

import keras
import numpy as np

from keras_mixer import weights as weights_lib
from keras_mixer.errors import KerasMixerError, is_number, is_whole_number
from keras_mixer.layers.input_normalization import INCEPTION, InputNormalization, check_normalization, fold_into_stem
from keras_mixer.models.registry import register_variant

POOLING_MODES = (None, "avg", "max")
CHANNELS_LAST = "channels_last"


def image_input(input_tensor, input_shape, default=(224, 224, 3)):
    """(input tensor, static input shape) as keras.applications does it: a new Input, or one wrapping
    `input_tensor` (whose shape then wins). The shape must be (height, width, channels) with static sizes: every
    family's token mixing is sized by the patch grid."""
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
        if input_shape is not None and tuple(input_shape) != shape:
            raise KerasMixerError(f"input_tensor has shape {shape} but input_shape is {tuple(input_shape)}: give one "
                                  "of them, or the same shape")
    else:
        shape = tuple(input_shape or default)
    if len(shape) != 3:
        raise KerasMixerError(f"input_shape must be (height, width, channels) (channels last), got {shape}")
    if any(size is None for size in shape):
        raise KerasMixerError(f"input_shape {shape}: keras_mixer models need a static height, width and channel "
                              "count (their token mixing is sized by the patch grid); give e.g. (224, 224, 3)")
    if shape[0] in (1, 3, 4) and shape[2] > 4:  # (3, 224, 224): an NCHW habit, named as such
        raise KerasMixerError(f"input_shape {shape} looks channels-first; keras_mixer models take channels last, "
                              f"(height, width, channels): {(shape[1], shape[2], shape[0])}")
    if any(size < 1 for size in shape):
        raise KerasMixerError(f"input_shape {shape}: every size must be at least 1")
    if input_tensor is None:
        return keras.Input(shape=shape, name="images"), shape
    if keras.backend.is_keras_tensor(input_tensor):
        return input_tensor, shape
    return keras.Input(tensor=input_tensor, shape=shape, name="images"), shape


def check_arguments(pooling, weights=None, include_top=True, classifier_activation=None, classes=1000,
                    drop_path_rate=0.0, dropout_rate=0.0):
    """keras.applications' argument checks: a known `pooling`; with weights and a classifier, only a softmax or
    no activation (Keras refuses others there: a pretrained head's outputs are logits). Then ours, named as the
    caller wrote them (Keras would name its Dense `units`, or a block's own rate): with a classifier, a whole number
    of `classes` >= 1; rates in [0, 1)."""
    if pooling not in POOLING_MODES:
        raise KerasMixerError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
    if weights is not None and include_top:
        activation = keras.activations.get(classifier_activation)
        if activation not in (keras.activations.get("softmax"), keras.activations.get(None)):
            raise KerasMixerError(
                "Only None and 'softmax' activations are allowed for classifier_activation when loading weights "
                f"with include_top=True (as in keras.applications); got {classifier_activation!r}")
    if include_top and not (is_whole_number(classes) and classes >= 1):
        raise KerasMixerError(f"classes must be a whole number >= 1 (the head's size), got {classes!r}")
    for name, rate in (("drop_path_rate", drop_path_rate), ("dropout_rate", dropout_rate)):
        if not (is_number(rate) and 0 <= rate < 1):
            raise KerasMixerError(f"{name} must be a number in [0, 1), got {rate!r}")


def trained_normalization(weights, variant, authors, override=None, channels=3):
    """The (mean, std) the checkpoint in `weights` was trained on, or None when that is `preprocess_input`'s
    [-1, 1] (nothing to do). `override` (the builders' `checkpoint_normalization`) wins; otherwise a released tag's
    recorded normalization, for a checkpoint file the one timm's config.json beside it records (a Hugging Face Hub
    snapshot: `weights_lib.hub_normalization`), else the authors' own (`authors`). Keras files hold our weights,
    which already take `preprocess_input`."""
    if weights is None or weights_lib.is_keras_file(weights):
        if override is not None:
            raise KerasMixerError(
                f"checkpoint_normalization describes a checkpoint (a released tag or an authors' file); with "
                f"weights={weights!r} there is none (a .keras file keeps its own InputNormalization step)")
        return None
    recorded = None
    if override is not None:
        normalization, what = override, "checkpoint_normalization"
    elif weights_lib.is_checkpoint_path(weights) and (recorded := weights_lib.hub_normalization(weights)):
        normalization, what = recorded, f"the normalization the config.json beside {os.fspath(weights)!r} records"
    elif weights_lib.is_checkpoint_path(weights):
        normalization, what = authors, f"the normalization {weights!r} was trained on"
    else:
        normalization = weights_lib.resolve(variant, weights).normalization
        what = f"the normalization {weights!r} was trained on"
    normalization = check_normalization(normalization, channels, what)
    if recorded:
        print(f"{os.fspath(weights)}: trained on mean {recorded[0]}, std {recorded[1]} (its config.json); the model "
              "maps preprocess_input's [-1, 1] onto that")
    return None if np.allclose(normalization, INCEPTION) else normalization


def normalized_input(images, normalization):
    """`images` mapped onto `normalization` by an explicit `InputNormalization` step (for stems that pad, where
    folding into the stem is not exact), or `images` itself."""
    if normalization is None:
        return images
    return InputNormalization(*normalization, name="input_normalization")(images)


def folding_normalization(convert, stem, normalization):
    """`convert` (state_dict -> our params), followed by folding `normalization` into the unpadded conv `stem`."""
    if normalization is None:
        return convert

    def convert_and_fold(state_dict, source="checkpoint"):
        params = convert(state_dict, source)
        if f"{stem}/kernel" in params and f"{stem}/bias" in params:  # otherwise assign_by_path names what is missing
            params[f"{stem}/kernel"], params[f"{stem}/bias"] = fold_into_stem(
                params[f"{stem}/kernel"], params[f"{stem}/bias"], normalization)
        return params

    return convert_and_fold


# every family's block classes: what `feature_extractor` returns the outputs of
BLOCK_LAYERS = ("MixerBlock", "SparseMixerBlock", "ASMLPBlock", "HireBlock", "PermutatorBlock", "RaftBlock")


def require_keras_model(model, what, error=KerasMixerError):
    """`error` naming what `what` was given unless `model` is a keras.Model (a path: load it first)."""
    if not isinstance(model, keras.Model):
        path = isinstance(model, (str, os.PathLike))
        raise error(f"{what} takes a keras.Model, got {type(model).__name__} {model!r}"[:200]
                    + (": load a .keras file with keras.models.load_model first" if path else ""))


def feature_extractor(model, as_grid=True):
    """A model sharing `model`'s weights that returns every block's output, in order, for any family.

    Like timm's `forward_intermediates`: the hierarchical families' blocks give [batch, H, W, C] maps (NHWC); the
    Mixer's and Sparse-MLP's give [batch, tokens, C], as [batch, H/p, W/p, C] maps with `as_grid`.
    """
    require_keras_model(model, "feature_extractor")
    blocks = [layer for layer in model.layers if type(layer).__name__ in BLOCK_LAYERS]
    if not blocks:
        raise KerasMixerError(f"model {model.name!r} has no block layers ({', '.join(BLOCK_LAYERS)})")
    outputs = [block.output for block in blocks]
    if as_grid and len(outputs[0].shape) == 3:
        stem = next(layer for layer in model.layers if type(layer).__name__ == "PatchEmbedding")
        rows, cols = stem.grid_shape(stem.input.shape)
        outputs = [keras.layers.Reshape((rows, cols, out.shape[-1]))(out) for out in outputs]
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def output_activation(model):
    """"softmax" or "sigmoid" when the model's last layer ends in that activation (it outputs probabilities),
    else None (logits)."""
    activation = getattr(model.layers[-1], "activation", None) if getattr(model, "layers", None) else None
    name = getattr(activation, "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def finish_model(images, input_tensor, outputs, name, model_class=keras.Model):
    inputs = keras.utils.get_source_inputs(images) if input_tensor is not None else images
    return model_class(inputs, outputs, name=name)


def token_head(x, grid, include_top, pooling, classes, classifier_activation, dropout_rate=0.0):
    """The tail of an isotropic [batch, tokens, C] backbone (Mixer-style): mean over tokens -> dropout -> `head`
    Dense (zero-initialized, as the official Mixer); with include_top=False the pooled tokens, or the tokens as an
    NHWC `grid`."""
    if include_top:
        x = keras.layers.GlobalAveragePooling1D(CHANNELS_LAST, name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        return keras.layers.Dense(classes, kernel_initializer="zeros", activation=classifier_activation,
                                  name="head")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling1D(CHANNELS_LAST, name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling1D(CHANNELS_LAST, name="max_pool")(x)
    return keras.layers.Reshape((*grid, x.shape[-1]), name="token_grid")(x)


def feature_map_head(x, stages, include_top, return_stages, pooling, classes, classifier_activation, dropout_rate=0.0):
    """The tail of a hierarchical (NHWC) backbone: the classifier (global average pool -> dropout -> `head`), or
    with include_top=False every stage's map, the final map, or its pooling. The dropout layer exists only at a
    rate above 0: the graphs without it stay as they were (on torch every layer call costs host time)."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(CHANNELS_LAST, name="avg_pool")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        return keras.layers.Dense(classes, activation=classifier_activation, name="head")(x)
    if return_stages:
        return stages
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(CHANNELS_LAST, name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(CHANNELS_LAST, name="max_pool")(x)
    return x


def feature_map_model(images, input_tensor, x, stages, head, weights, convert, family, name):
    """Finishes a hierarchical backbone: `feature_map_head` with `head` (its include_top, return_stages, pooling,
    classes, classifier_activation), the model, and `weights` (a Keras file, or an official checkpoint mapped by
    `convert`; or a released tag of the variant `name`, such as "imagenet") loaded into it."""
    model = finish_model(images, input_tensor, feature_map_head(x, stages, **head), name)
    if weights is not None:
        if not (weights_lib.is_keras_file(weights) or weights_lib.is_checkpoint_path(weights)):
            weights = weights_lib.released_file(name, weights)  # the builders name models by their variant
        weights_lib.load_local_weights(model, weights, convert, family)
    return model


def released_classes(variant, weights):
    """The class count of `variant`'s release `weights` (a tag such as "imagenet21k"), else keras.applications'
    1000: a builder without `classes` gets the head the checkpoint has, not a new one of 1000 in its place."""
    tag = isinstance(weights, str) and not (weights_lib.is_keras_file(weights)
                                            or weights_lib.is_checkpoint_path(weights))
    return weights_lib.resolve(variant, weights).classes if tag else 1000


def variant_builder(variant, function_name, build, config, extra_doc="", former_names=()):
    """Registers `variant` and returns its keras.applications-style builder: `build(**config, ...)` with the
    standard arguments; family-specific options (drop_path_rate, gelu, return_stages, ...) pass through."""

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=None,
        classifier_activation="softmax",
        name=None,
        **options,
    ):
        if classes is None:  # as timm's pretrained configs: a 21k release brings its 21,843-class head
            classes = released_classes(variant, weights)
        return build(
            **config,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name or variant,
            **options,
        )

    builder.__name__ = builder.__qualname__ = function_name
    settings = ", ".join(f"{k}={v}" for k, v in config.items())
    builder.__doc__ = (
        f"{function_name}: {build.__name__} with {settings}.\n\nkeras.applications arguments (`classes` defaults "
        f"to the release's own head with a pretrained tag, else 1000); other keyword arguments (e.g. "
        f"drop_path_rate) as in `{build.__name__}`. {extra_doc}"
    )
    return register_variant(variant, builder, aliases=former_names)
