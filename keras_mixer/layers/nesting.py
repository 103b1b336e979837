"""The one walk over nested Keras layers."""


def nested_layers(layer, include_self=True):
    """`layer` (unless `include_self=False`) and every layer inside it at any depth, each once, each before the
    layers inside it.

    Keras 3 has no public walk of nested layers (`Model.layers` lists one level, and only of models); its own,
    `Layer._flatten_layers`, is the one private Keras API keras_mixer reads, and only here, so that a Keras release
    that changes it breaks this function alone (the QAT, equalization and export tests walk every family's blocks
    through it)."""
    return layer._flatten_layers(include_self=include_self)
