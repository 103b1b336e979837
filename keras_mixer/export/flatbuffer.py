"""The TFLite flatbuffer layer: reading a graph as named records (`read_graph`: `Op`s of `Tensor`s), unpacking and
packing the schema's object form (`to_object`, `pack_model`), joining converted pieces into one graph (`join`), and
the converter's private switches the export relies on (`calibrate_only`, `quantize_settings`, `mlir_quantize`,
`per_tensor_kernels`). TensorFlow's private names are used here and nowhere else; `PRIVATE_TENSORFLOW_NAMES` lists
them, and a test fails naming the one a TensorFlow release drops.
"""

import os
import typing

import flatbuffers
import numpy as np

from keras_mixer.errors import ExportError

TFLITE_FILE_IDENTIFIER = b"TFL3"
# (module or "TFLiteConverter", attribute): what this module takes from TensorFlow beyond its public API
PRIVATE_TENSORFLOW_NAMES = (
    ("tensorflow.lite.python.schema_py_generated", "ModelT"),
    ("tensorflow.lite.python.schema_py_generated", "Model"),
    ("tensorflow.lite.python.convert", "mlir_quantize"),
    ("tensorflow.lite.tools.flatbuffer_utils", "convert_bytearray_to_object"),
    ("tensorflow.lite.tools.flatbuffer_utils", "opcode_to_name"),
    ("TFLiteConverter", "_experimental_calibrate_only"),
    ("TFLiteConverter", "_experimental_disable_per_channel"),
)


class Tensor(typing.NamedTuple):
    dtype: str  # the schema's TensorType name: "FLOAT32", "INT8", ...
    shape: tuple
    constant: typing.Any  # the buffer's bytes as a uint8 array for a constant, None for an activation
    name: str


class Op(typing.NamedTuple):
    op: str  # the builtin operator's name: "FULLY_CONNECTED", ...
    version: int
    inputs: list  # of Tensor (omitted optional inputs left out)
    outputs: list


def to_object(flatbuffer):
    """The schema's object form (a mutable `ModelT`) of a flatbuffer."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.convert_bytearray_to_object(flatbuffer)


def opcode_name(model, opcode_index):
    """The builtin operator name of `model.operatorCodes[opcode_index]` (a `ModelT`)."""
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils.opcode_to_name(model, opcode_index)


def calibrate_only(converter):
    """The converter's first step of a full-integer conversion: the float graph with each activation's min/max
    over the representative dataset recorded. `mlir_quantize` is its second step; between the two, ranges can be
    narrowed (`calibration.narrow_ranges`) and each op's error measured (`quantization_report`). These are the
    steps `tf.lite.experimental.QuantizationDebugger` takes too, through the converter's private
    `_experimental_calibrate_only`; ai-edge-quantizer, the public alternative, measured as fast but with 2.3-3.6x
    larger logit errors and float I/O (docs/export.md)."""
    converter._experimental_calibrate_only = True
    try:
        return converter.convert()
    finally:
        converter._experimental_calibrate_only = False


def per_tensor_kernels(converter):
    """Quantize the converter's kernels per tensor instead of per output channel."""
    converter._experimental_disable_per_channel = True


def quantize_settings(converter):
    """What the MLIR quantizer takes from a converter: its input and output types and per-channel choice."""
    return {"input_data_type": converter.inference_input_type, "output_data_type": converter.inference_output_type,
            "disable_per_channel": converter._experimental_disable_per_channel}


def mlir_quantize(calibrated, settings, float_ops=(), float_nodes=(), numeric_verify=False):
    """The MLIR quantizer on a calibrated graph (`settings` from `quantize_settings`), with `float_ops` (op types)
    and `float_nodes` (tensor names) left float32. Fake-quant ranges of a QAT model still decide the ops they
    surround. `numeric_verify`: the debug model, float I/O, every quantized op followed by a comparison with its
    float op."""
    from tensorflow.lite.python import convert

    io_types = {} if numeric_verify else {"input_data_type": settings["input_data_type"],
                                           "output_data_type": settings["output_data_type"]}
    return convert.mlir_quantize(
        calibrated, disable_per_channel=settings["disable_per_channel"],
        denylisted_ops=list(float_ops) or None, denylisted_nodes=list(float_nodes) or None,
        enable_numeric_verify=numeric_verify, **io_types)


def schema():
    """TensorFlow's generated TFLite schema (its object API: ModelT, BufferT, TensorType, ...)."""
    try:
        from tensorflow.lite.python import schema_py_generated
    except ImportError as error:
        raise ExportError("reading a .tflite flatbuffer needs TensorFlow's TFLite schema: install tensorflow") from error
    return schema_py_generated


def _enum_names(enum):
    return {value: name for name, value in vars(enum).items() if not name.startswith("_")}


def read_graph(path, data=None):
    """The `Op`s of the main subgraph, in graph order. `data`: the flatbuffer's bytes, if not read from `path`
    (which then only names it in errors)."""
    path = os.fspath(path)
    if data is None:
        if not os.path.isfile(path):
            raise ExportError(f"{path}: no such .tflite file")
        data = open(path, "rb").read()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ExportError(f"{path}: not a .tflite flatbuffer (no TFL3 identifier)")
    tflite = schema()
    op_names, type_names = _enum_names(tflite.BuiltinOperator), _enum_names(tflite.TensorType)
    try:
        model = tflite.Model.GetRootAs(data, 0)
        graph = model.Subgraphs(0)

        def tensor(i):
            t = graph.Tensors(i)
            buffer = model.Buffers(t.Buffer())
            constant = buffer.DataAsNumpy() if buffer is not None and buffer.DataLength() else None
            shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            return Tensor(type_names.get(t.Type(), str(t.Type())), shape, constant, t.Name().decode(errors="replace"))

        ops = []
        for k in range(graph.OperatorsLength()):
            op = graph.Operators(k)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            inputs = [tensor(i) for i in op.InputsAsNumpy() if i >= 0] if op.InputsLength() else []
            outputs = [tensor(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
            ops.append(Op(op_names.get(builtin, f"BUILTIN_{builtin}"), code.Version(), inputs, outputs))
    except Exception as error:  # a damaged flatbuffer fails anywhere inside the generated accessors
        raise ExportError(f"{path}: damaged .tflite flatbuffer ({type(error).__name__}: {error})") from error
    return ops




def pack_model(model):
    """The schema object `model` (a TFLite `ModelT`) packed into a flatbuffer, a memoryview: no copy of a large
    model. The builder is presized for the weights: flatbuffer_utils' convert_object_to_bytearray grows its builder
    from 1 KB and copies its output three times (Mixer-L/16's export peaked 0.7 GB above its conversion there)."""
    inline = sum(len(buffer.data) for buffer in model.buffers if buffer.data is not None)
    builder = flatbuffers.Builder(inline + 2**20)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return memoryview(builder.Bytes)[builder.Head():]




def _version(data):
    return tuple(int(part) for part in bytes(data).rstrip(b"\0").decode().split(".") if part.isdigit())


def _quantized(tensor):
    return tensor.quantization is not None and tensor.quantization.scale is not None and len(tensor.quantization.scale)


def join(flatbuffers, cut_names):
    """One TFLite flatbuffer (a memoryview) running the graphs of `flatbuffers` in turn: each graph's single input
    is replaced by the previous graph's single output (same shape, float32), renamed `cut_names[i]`; the first
    graph's input and signature, the last one's outputs."""
    TensorType = schema().TensorType
    models = [to_object(flatbuffer) for flatbuffer in flatbuffers]
    for index, model in enumerate(models):
        if len(model.subgraphs) != 1 or len(model.signatureDefs or []) > 1:
            raise ExportError(f"blockwise conversion: piece {index} converted to {len(model.subgraphs)} subgraphs "
                              f"and {len(model.signatureDefs or [])} signatures; it can only join single graphs")
        if any(buffer.offset for buffer in model.buffers):
            raise ExportError(f"blockwise conversion: piece {index} stores its weights outside the flatbuffer "
                              "(a piece above 2 GB); pass a smaller piece_bytes")
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
