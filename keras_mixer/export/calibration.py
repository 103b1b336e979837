"""Activation ranges that one outlier does not rule: the converter's calibrated min/max of every activation tensor,
narrowed to a percentile of its values or to the range of least int8 quantization error.

TensorFlow's calibrator records each tensor's extremes over the calibration images, so a single large value sets
the int8 step for all the others. This reruns the calibrated float graph on the same images, counts every
calibrated tensor's values in a fine histogram over its range, and writes narrower ranges into the calibrated model
before the MLIR quantizer reads them. The graph input (the image range), and the tensors around QUANTIZE /
DEQUANTIZE ops (ranges pinned on purpose, such as the logits' headroom) keep their ranges. A range always contains
0, and only ever narrows, except that values moved out of one tensor into a concatenation (AS-MLP's shifted
slices) take that tensor's range.
"""

import numpy as np

from keras_mixer.errors import ExportError
from keras_mixer.io_utils import native_stderr_quiet

CALIBRATION_METHODS = ("minmax", "percentile", "mse")
# the share of a tensor's values inside its "percentile" range (each tail gets half the rest)
PERCENTILE = 99.99
# the histograms are counted on at most this many calibration images (a float pass without XNNPACK, every tensor
# kept): on the digits Mixer 64 images give 32.9 dB of logit SQNR where 256 give 33.3 (min/max: 31.4), in a quarter
# of the time
RANGE_IMAGES = 64
# each tensor's values are counted in this many equal bins over its calibrated range: percentiles and errors are
# read from the counts (a subsample of the values misses the tails, which decide both: measured 6 dB worse)
HISTOGRAM_BINS = 1 << 16
# "mse" tries the min/max range scaled by each of these factors (either end, zero kept inside)
_MSE_FACTORS = np.linspace(1.0, 0.2, 33)
_PINNED_OPS = ("QUANTIZE", "DEQUANTIZE")


def _int8_error(centers, counts, low, high):
    """Mean squared int8 quantization error over values at `centers` with `counts`, for the range [low, high]."""
    scale = (high - low) / 255.0
    zero_point = np.round(-128 - low / scale)
    quantized = np.clip(np.round(centers / scale + zero_point), -128, 127)
    return float(np.sum(counts * ((quantized - zero_point) * scale - centers) ** 2) / np.sum(counts))


def _narrowed(counts, low, high, method):
    """The (low, high) `method` gives for the values counted in `counts` (HISTOGRAM_BINS bins over [low, high]),
    within [low, high] and containing 0."""
    edges = np.linspace(low, high, len(counts) + 1)
    if method == "percentile":
        tail = (100.0 - PERCENTILE) / 200.0 * counts.sum()
        cumulative = np.cumsum(counts)
        new_low = edges[np.searchsorted(cumulative, tail, side="right")]
        new_high = edges[np.searchsorted(cumulative, cumulative[-1] - tail, side="left") + 1]
    else:  # "mse": least int8 quantization error over scaled copies of the min/max range
        centers = (edges[:-1] + edges[1:]) / 2
        candidates = [(low * factor, high * factor) for factor in _MSE_FACTORS]
        new_low, new_high = min(candidates, key=lambda bounds: _int8_error(centers, counts, *bounds))
    return min(float(new_low), 0.0), max(float(new_high), 0.0)


def narrow_ranges(calibrated, images, batch_size, method, image_input=True):
    """`calibrated` (a calibrate-only TFLite flatbuffer) with its activation ranges narrowed by `method`
    ("percentile" or "mse"), measured by running it on `images` in batches of `batch_size`; returns (flatbuffer,
    {tensor name: ((old low, old high), (new low, new high))} for the ranges it changed). `image_input`: the graph's
    input is the image, whose range stays; a piece of a blockwise conversion takes activations instead, narrowed as
    the whole graph narrows them."""
    from keras_mixer.export.flatbuffer import opcode_name, pack_model, to_object

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"calibration must be one of {CALIBRATION_METHODS}, got {method!r}")
    if method == "minmax":
        return calibrated, {}
    model = to_object(calibrated)
    graph = model.subgraphs[0]
    pinned = set(graph.inputs) if image_input else set()
    for op in graph.operators:
        if opcode_name(model, op.opcodeIndex) in _PINNED_OPS:
            pinned.update(op.inputs)
            pinned.update(op.outputs)
    ranged = [index for index, tensor in enumerate(graph.tensors)
              if index not in pinned and tensor.quantization is not None and tensor.quantization.min is not None
              and len(tensor.quantization.min) == 1 and model.buffers[tensor.buffer].data is None]
    images = images[: max(RANGE_IMAGES // batch_size, 1) * batch_size]
    usable = len(images) - len(images) % batch_size
    if usable == 0:
        raise ExportError(f"calibration {method!r} needs at least one batch of {batch_size} images")
    bounds = {index: (float(graph.tensors[index].quantization.min[0]), float(graph.tensors[index].quantization.max[0]))
              for index in ranged}
    counts = {index: np.zeros(HISTOGRAM_BINS) for index in ranged if bounds[index][1] > bounds[index][0]}
    interpreter = _interpreter(calibrated)
    input_index = interpreter.get_input_details()[0]["index"]
    for start in range(0, usable, batch_size):
        interpreter.set_tensor(input_index, np.asarray(images[start : start + batch_size], np.float32))
        interpreter.invoke()
        for index, histogram in counts.items():
            low, high = bounds[index]
            values = interpreter.get_tensor(index).ravel().astype(np.float64)  # float32 overflowed on masks
            # -inf / NaN (Sparse-MLP's routing masks) are no int8 value: they fall outside every histogram
            bins = (values[np.isfinite(values)] - low) * (HISTOGRAM_BINS / (high - low))
            # np.histogram builds its 65,536 edges on every call: 30x slower than counting the bin indices
            histogram += np.bincount(np.clip(bins.astype(np.int64), 0, HISTOGRAM_BINS - 1), minlength=HISTOGRAM_BINS)
    narrowed = {index: _narrowed(histogram, *bounds[index], method) for index, histogram in counts.items()}
    narrowed.update(_shared_ranges(model, graph, {**bounds, **narrowed}))
    changed = {}
    for index, (new_low, new_high) in narrowed.items():
        quantization = graph.tensors[index].quantization
        low, high = bounds[index]
        if (new_low, new_high) != (low, high):
            quantization.min, quantization.max = [new_low], [new_high]
            changed[graph.tensors[index].name.decode()] = ((low, high), (new_low, new_high))
    return bytes(pack_model(model)), changed


# ops whose int8 output has its first input's scale in TFLite: they move values without computing new ones
_MOVING_OPS = ("PAD", "PADV2", "STRIDED_SLICE", "SLICE", "RESHAPE", "TRANSPOSE")


def _shared_ranges(model, graph, ranges):
    """{tensor: range} that gives a CONCATENATION of values moved out of one tensor (AS-MLP's shifted slices) the
    range of that tensor, on the concatenation and every tensor between: narrowed one by one, their ranges differ
    in the last bits, and TFLite's quantizer puts a requantization (int8 -> int8 QUANTIZE, a pass over the data)
    on every input whose range is not the output's."""
    from keras_mixer.export.flatbuffer import opcode_name

    producer = {output: op for op in graph.operators for output in op.outputs}

    def path_to_source(index):
        path = [index]
        while index in producer and opcode_name(model, producer[index].opcodeIndex) in _MOVING_OPS:
            index = producer[index].inputs[0]
            path.append(index)
        return path

    shared = {}
    for op in graph.operators:
        if opcode_name(model, op.opcodeIndex) != "CONCATENATION" or op.outputs[0] not in ranges:
            continue
        moved = [index for index in op.inputs if model.buffers[graph.tensors[index].buffer].data is None]  # no zeros
        paths = [path_to_source(index) for index in moved]
        sources = {path[-1] for path in paths}
        if len(sources) != 1 or not sources <= ranges.keys():
            continue
        source_range = ranges[sources.pop()]
        for index in (op.outputs[0], *(index for path in paths for index in path[:-1])):
            if index in ranges:
                shared[index] = source_range
    return shared


def _interpreter(flatbuffer):
    """An interpreter keeping every intermediate tensor (builtin kernels: XNNPACK would fuse them away)."""
    from keras_mixer.export.interpreter import interpreter_class

    interpreter_type, resolvers = interpreter_class()
    with native_stderr_quiet():
        interpreter = interpreter_type(
            model_content=bytes(flatbuffer), experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    return interpreter
