"""Converting a large model block by block: peak memory bounded by a block, not by the whole model.

TensorFlow's converter holds several copies of a graph's weights at once (the frozen graph, the MLIR module, the
float flatbuffer, the calibrator's copy, the quantized module): converted whole, Mixer-L/16's int8 export peaks at
about 9x its float32 weights and Mixer-H/14's does not finish on 24 GB (docs/export.md, "Large models"). A model
whose graph is a chain of layers (stem, blocks, downsampling layers, head: every family here) converts one piece of
a few blocks at a time instead: each piece is a small Keras model over the same layer objects (no weight copy),
calibrated on the activations its predecessors compute from the calibration images, and quantized with the export's
own settings; the pieces' flatbuffers are then joined into one graph, each piece's input tensor replaced by its
predecessor's output. Pieces meet only at a block's output, where the whole graph is float32 anyway (a residual sum:
the default int8 export runs it in float between int8 matmuls, as XNNPACK is fastest), so the joined file has the
ops of a whole-graph conversion (tested through both routes).
"""

import numpy as np


# keyword arguments a chain's layer may be called with (the static-batch wrapper passes training=False)
_CHAIN_KWARGS = {"training", "mask"}


def weight_bytes(layers):
    """float32 bytes of the layers' weights (shared weights counted once)."""
    seen = {id(v): v for layer in layers for v in layer.weights}
    return sum(int(np.prod(v.shape)) * 4 for v in seen.values())


def layer_chain(model):
    """The model's layers in calling order, nested functional models expanded, when each takes the previous one's
    single output and nothing else (a chain); None for any other graph."""
    import keras

    from keras_mixer.export.equalize import source_layers

    if not hasattr(model, "_operations_by_depth") or len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    config = model.get_config()
    layers = {layer.name: layer for layer in model.layers}
    chain, previous = [], None
    for entry in config["layers"]:
        nodes = entry.get("inbound_nodes", [])
        if entry["class_name"] == "InputLayer":
            if previous is not None:
                return None
            previous = entry["name"]
            continue
        if len(nodes) != 1:
            return None
        kwargs = nodes[0].get("kwargs", {})
        if (source_layers(nodes[0]) != [previous] or set(kwargs) - _CHAIN_KWARGS
                or kwargs.get("mask") is not None):
            return None
        layer = layers[entry["name"]]
        inner = layer_chain(layer) if isinstance(layer, keras.Model) else [layer]
        if inner is None:
            return None
        chain += inner
        previous = entry["name"]
    return chain if source_layers(config["output_layers"]) == [previous] else None


def _is_block(layer):
    """A residual block (it declares its norm -> linear pairs for channel equalization): its output is a residual
    sum, a float32 tensor in the default int8 export, which the next layer reads as the whole graph's would."""
    return hasattr(layer, "channel_equalization")


def split(chain, piece_bytes):
    """Consecutive runs of the chain's layers that end at a block's output (where the whole graph is float32, so
    the pieces join into the graph a whole conversion gives), each with at most `piece_bytes` of float32 weights
    unless a single block with what precedes it up to the previous block passes it alone."""
    pieces = [[]]
    for before, layer in zip([None] + chain[:-1], chain):
        if pieces[-1] and _is_block(before) and weight_bytes(pieces[-1] + [layer]) > piece_bytes:
            pieces.append([])
        pieces[-1].append(layer)
    return pieces


def piece_model(layers, input_shape, name):
    """A Keras model calling `layers` in turn on an input of `input_shape` (batch included): the layers' own
    weights, not a copy."""
    import keras

    inputs = keras.Input(input_shape[1:], batch_size=input_shape[0], name="inputs")
    x = inputs
    for layer in layers:
        x = layer(x, training=False)
    return keras.Model(inputs, x, name=name)


def run(layers, x, batch_size=32):
    """The layers' float outputs on `x`, eagerly in batches (the next piece's calibration inputs)."""
    from keras import ops

    outputs = []
    for start in range(0, len(x), batch_size):
        y = x[start : start + batch_size]
        for layer in layers:
            y = layer(y, training=False)
        outputs.append(ops.convert_to_numpy(y))
    return np.concatenate(outputs)
