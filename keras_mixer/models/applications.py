"""What every model family shares: the keras.applications-style input, classifier tail and variant builders."""

import keras

from keras_mixer.models.registry import register_variant

POOLING_MODES = (None, "avg", "max")


def image_input(input_tensor, input_shape, default=(224, 224, 3)):
    """(input tensor, static input shape) as keras.applications does it: a new Input, or one wrapping
    `input_tensor` (whose shape then wins)."""
    if input_tensor is not None:
        shape = tuple(input_tensor.shape[1:])
        if keras.backend.is_keras_tensor(input_tensor):
            return input_tensor, shape
        return keras.Input(tensor=input_tensor, shape=shape, name="images"), shape
    shape = tuple(input_shape or default)
    return keras.Input(shape=shape, name="images"), shape


def check_pooling(pooling):
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")


def finish_model(images, input_tensor, outputs, name, model_class=keras.Model):
    inputs = keras.utils.get_source_inputs(images) if input_tensor is not None else images
    return model_class(inputs, outputs, name=name)


def token_head(x, grid, include_top, pooling, classes, classifier_activation, dropout_rate=0.0):
    """The tail of an isotropic [batch, tokens, C] backbone (Mixer-style): mean over tokens -> dropout -> `head`
    Dense (zero-initialized, as the official Mixer); with include_top=False the pooled tokens, or the tokens as an
    NHWC `grid`."""
    if include_top:
        x = keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        return keras.layers.Dense(classes, kernel_initializer="zeros", activation=classifier_activation,
                                  name="head")(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling1D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling1D(name="max_pool")(x)
    return keras.layers.Reshape((*grid, x.shape[-1]), name="token_grid")(x)


def feature_map_head(x, stages, include_top, return_stages, pooling, classes, classifier_activation):
    """The tail of a hierarchical (NHWC) backbone: the classifier (global average pool -> `head`), or with
    include_top=False every stage's map, the final map, or its pooling."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.layers.Dense(classes, activation=classifier_activation, name="head")(x)
    if return_stages:
        return stages
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def feature_map_model(images, input_tensor, x, stages, head, weights, convert, family, name):
    """Finishes a hierarchical backbone: `feature_map_head` with `head` (its include_top, return_stages, pooling,
    classes, classifier_activation), the model, and `weights` (a Keras file, or an official checkpoint mapped by
    `convert`; or a released tag of the variant `name`, such as "imagenet") loaded into it."""
    from keras_mixer import weights as weights_lib

    model = finish_model(images, input_tensor, feature_map_head(x, stages, **head), name)
    if weights is not None:
        if not (weights_lib.is_keras_file(weights) or weights_lib.is_checkpoint_path(weights)):
            weights = weights_lib.released_file(name, weights)  # the builders name models by their variant
        weights_lib.load_local_weights(model, weights, convert, family)
    return model


def variant_builder(variant, function_name, build, config, extra_doc=""):
    """Registers `variant` and returns its keras.applications-style builder: `build(**config, ...)` with the
    standard arguments; family-specific options (drop_path_rate, gelu, return_stages, ...) pass through."""

    def builder(
        include_top=True,
        weights=None,
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=None,
        **options,
    ):
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
        f"{function_name}: {build.__name__} with {settings}.\n\nkeras.applications arguments; other keyword "
        f"arguments (e.g. drop_path_rate) as in `{build.__name__}`. {extra_doc}"
    )
    return register_variant(variant, builder)
