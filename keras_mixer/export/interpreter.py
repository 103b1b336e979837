"""Running `.tflite` files: the LiteRT interpreter (ai-edge-litert), else tflite-runtime, else TensorFlow's."""

import os
from collections import Counter

import numpy as np

from keras_mixer.errors import ExportError, is_whole_number
from keras_mixer.io_utils import folder_given_as_model, native_stderr_quiet
from keras_mixer.preprocessing import preprocessed_images_problem, quantize_values


def interpreter_class():
    """(Interpreter class, OpResolverType enum) from the first runtime available."""
    try:
        from ai_edge_litert import interpreter as runtime
    except ImportError:
        try:
            from tflite_runtime import interpreter as runtime
        except ImportError:
            import tensorflow as tf

            return tf.lite.Interpreter, tf.lite.experimental.OpResolverType
    return runtime.Interpreter, runtime.OpResolverType


def load_interpreter(path, num_threads=None, delegates=True, verify=True):
    """An allocated interpreter for `path`; a missing or corrupt file raises ExportError naming it.

    With `delegates=False` the graph runs on the builtin kernels only, so its op list is the file's own
    (XNNPACK would otherwise replace most nodes with DELEGATE nodes). `verify` first loads and runs the file in a
    separate process (`keras_mixer.export.sandbox`): some damaged files abort LiteRT, which would take this
    process down with it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ExportError(folder_given_as_model(path, (".tflite",)))
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such .tflite file")
    # LiteRT's own refusal read as a damaged file ("not a valid .tflite model (num_threads should >= 1)")
    if num_threads is not None and not (is_whole_number(num_threads) and num_threads >= 1):
        raise ExportError(f"num_threads must be None (LiteRT's default) or a whole number >= 1, got {num_threads!r}")
    if verify:
        from keras_mixer.export.sandbox import probe

        probe(path)
    interpreter_type, resolver_types = interpreter_class()
    kwargs = {"model_path": path, "num_threads": num_threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = resolver_types.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with native_stderr_quiet():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" INFO line
            interpreter = interpreter_type(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ExportError(f"{path}: not a valid .tflite model ({error})") from error
    return interpreter


def op_counts(path):
    """{op name: count} of the model's own graph (no delegates)."""
    return Counter(op["op_name"] for op in load_interpreter(path, delegates=False)._get_ops_details())


def quantize(x, details):
    """Float tensor -> the input tensor's dtype, with its scale and zero point (a no-op for float inputs)."""
    scale, zero_point = details["quantization"]
    dtype = details["dtype"]
    if not np.issubdtype(dtype, np.integer) or scale == 0:
        return np.asarray(x, dtype)
    return quantize_values(x, scale, zero_point, dtype)


def dequantize(q, details):
    scale, zero_point = details["quantization"]
    if not np.issubdtype(details["dtype"], np.integer) or scale == 0:
        return np.asarray(q, np.float32)
    return (np.asarray(q, np.float32) - zero_point) * scale


def predict(interpreter, images):
    """Runs `images` (preprocessed float [N, H, W, C]) through the interpreter (or the `.tflite` file it is given
    instead, loaded with `load_interpreter`) in its static batch size and returns float outputs [N, classes]
    (dequantized for integer models)."""
    if isinstance(interpreter, (str, os.PathLike)):
        interpreter = load_interpreter(interpreter)
    elif not hasattr(interpreter, "get_input_details"):
        raise ExportError(f"predict takes a LiteRT interpreter (load_interpreter(path)) or a .tflite path, got "
                          f"{type(interpreter).__name__}")
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    batch = inp["shape"][0]
    if len(inp["shape"]) < 1 or min(inp["shape"]) < 1:
        raise ExportError(f"the model's input shape {tuple(inp['shape'])} is not a static batch of images")
    # raw pixels would be quantized as if preprocessed, NaN to arbitrary integers: silent wrong results
    problem = preprocessed_images_problem(images, tuple(inp["shape"][1:]))
    if problem:
        raise ExportError(f"the input {problem}: pass what the model takes, preprocessed (keras_mixer.preprocess_input "
                          "gives [-1, 1])")
    images = np.asarray(images, np.float32)
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.float32)])
        try:
            interpreter.set_tensor(inp["index"], quantize(chunk, inp))
            interpreter.invoke()
            result = interpreter.get_tensor(out["index"])
        except (RuntimeError, ValueError) as error:  # a damaged graph fails here, e.g. a tensor without its data
            raise ExportError(f"the .tflite model failed to run: {error}") from error
        outputs.append(dequantize(result, out)[: batch - pad])
    return np.concatenate(outputs)
