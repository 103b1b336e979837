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

from keras_mixer.errors import ExportError
from keras_mixer.export.metadata import pack_model

# float32 weights per piece: one Mixer-L/16 or H/14 block (50-54 MB) each; the converter's ~10x of a piece stays
# well under the model's own size
PIECE_BYTES = 64 * 2**20
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

    from keras_mixer.export.equalize import _histories

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
        if ([history[0] for history in _histories(nodes[0])] != [previous] or set(kwargs) - _CHAIN_KWARGS
                or kwargs.get("mask") is not None):
            return None
        layer = layers[entry["name"]]
        inner = layer_chain(layer) if isinstance(layer, keras.Model) else [layer]
        if inner is None:
            return None
        chain += inner
        previous = entry["name"]
    return chain if [history[0] for history in _histories(config["output_layers"])] == [previous] else None


def _is_block(layer):
    """A residual block (it declares its norm -> linear pairs for channel equalization): its output is a residual
    sum, a float32 tensor in the default int8 export, which the next layer reads as the whole graph's would."""
    return hasattr(layer, "channel_equalization")


def split(chain, piece_bytes=None):
    """Consecutive runs of the chain's layers that end at a block's output (where the whole graph is float32, so
    the pieces join into the graph a whole conversion gives), each with at most `piece_bytes` of float32 weights
    (PIECE_BYTES) unless a single block with what precedes it up to the previous block passes it alone."""
    limit = PIECE_BYTES if piece_bytes is None else piece_bytes
    pieces = [[]]
    for before, layer in zip([None] + chain[:-1], chain):
        if pieces[-1] and _is_block(before) and weight_bytes(pieces[-1] + [layer]) > limit:
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


def _version(data):
    return tuple(int(part) for part in bytes(data).rstrip(b"\0").decode().split(".") if part.isdigit())


def _quantized(tensor):
    return tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale)


def join(flatbuffers, cut_names):
    """One TFLite flatbuffer (a memoryview) running the graphs of `flatbuffers` in turn: each graph's single input
    is replaced by the previous graph's single output (same shape, float32), renamed `cut_names[i]`; the first
    graph's input and signature, the last one's outputs."""
    from tensorflow.lite.python.schema_py_generated import TensorType
    from tensorflow.lite.tools import flatbuffer_utils

    models = [flatbuffer_utils.convert_bytearray_to_object(flatbuffer) for flatbuffer in flatbuffers]
    for index, model in enumerate(models):
        if len(model.subgraphs) != 1 or len(model.signatureDefs or []) > 1:
            raise ExportError(f"blockwise conversion: piece {index} converted to {len(model.subgraphs)} subgraphs "
                              f"and {len(model.signatureDefs or [])} signatures; it can only join single graphs")
        if any(buffer.offset for buffer in model.buffers):
            raise ExportError(f"blockwise conversion: piece {index} stores its weights outside the flatbuffer "
                              "(a piece above 2 GB); lower blockwise.PIECE_BYTES")
    joined = models[0]
    graph = joined.subgraphs[0]
    codes = {(c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version): i
             for i, c in enumerate(joined.operatorCodes)}
    runtime = {entry.name: entry.buffer for entry in joined.metadata or []}.get(b"min_runtime_version")
    for index, model in enumerate(models[1:], start=1):
        piece = model.subgraphs[0]
        if len(graph.outputs) != 1 or len(piece.inputs) != 1:
            raise ExportError(f"blockwise conversion: piece {index - 1} has {len(graph.outputs)} outputs and piece "
                              f"{index} {len(piece.inputs)} inputs; pieces join on one tensor")
        cut, entry = graph.tensors[graph.outputs[0]], piece.tensors[piece.inputs[0]]
        if (list(cut.shape) != list(entry.shape) or cut.type != entry.type or cut.type != TensorType.FLOAT32
                or _quantized(cut) or _quantized(entry)):
            raise ExportError(f"blockwise conversion: piece {index - 1}'s output {list(cut.shape)} (type {cut.type}) "
                              f"is not piece {index}'s float32 input {list(entry.shape)} (type {entry.type})")
        cut.name = cut_names[index - 1].encode()
        opcode = np.empty(len(model.operatorCodes), np.int64)
        for i, c in enumerate(model.operatorCodes):
            opcode[i] = codes.setdefault((c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version),
                                         len(joined.operatorCodes))
            if opcode[i] == len(joined.operatorCodes):
                joined.operatorCodes.append(c)
        buffers = {0: 0}
        tensors = np.empty(len(piece.tensors), np.int64)
        for i, tensor in enumerate(piece.tensors):
            if i == piece.inputs[0]:
                tensors[i] = graph.outputs[0]
                continue
            if tensor.buffer not in buffers:
                buffers[tensor.buffer] = len(joined.buffers)
                joined.buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = buffers[tensor.buffer]
            tensors[i] = len(graph.tensors)
            graph.tensors.append(tensor)

        def mapped(indices):  # -1 marks an omitted optional input
            indices = np.asarray(indices, np.int64)
            return np.where(indices >= 0, tensors[np.maximum(indices, 0)], -1).astype(np.int32)

        for op in piece.operators:
            op.opcodeIndex = int(opcode[op.opcodeIndex])
            op.inputs, op.outputs = mapped(op.inputs), mapped(op.outputs)
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = mapped(op.intermediates)
            graph.operators.append(op)
        graph.outputs = mapped(piece.outputs)
        if joined.signatureDefs and model.signatureDefs:
            outputs = model.signatureDefs[0].outputs
            for output in outputs:
                output.tensorIndex = int(tensors[output.tensorIndex])
            joined.signatureDefs[0].outputs = outputs
        version = {entry.name: entry.buffer for entry in model.metadata or []}.get(b"min_runtime_version")
        if runtime is not None and version is not None and (
                _version(model.buffers[version].data) > _version(joined.buffers[runtime].data)):
            joined.buffers[runtime].data = model.buffers[version].data
    return pack_model(joined)
