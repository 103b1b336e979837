"""Opening an untrusted `.tflite` in a separate process first.

LiteRT checks a model's structure, but some damaged files pass those checks and then abort the process while
tensors are allocated or the graph runs (found by fuzzing: a tensor whose type was flipped to float32 inside an
int8 graph). An abort cannot be caught in Python, so `probe` loads, allocates and runs the file once (zeros in) in
a long-lived worker process; if the worker dies, the file is reported as damaged and the next probe starts a new
worker. Cost: one extra load and run per file, and one worker start (~1 s) per process.
"""

import atexit
import os
import select
import signal
import subprocess
import sys

from keras_mixer.errors import ExportError

# the runtime fallback of interpreter.interpreter_class, repeated here so the worker imports LiteRT only
# (importing keras_mixer would start TensorFlow in every worker)
_WORKER = r"""
import sys
import numpy as np
try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError:
        from tensorflow.lite import Interpreter
for line in sys.stdin:
    try:
        interpreter = Interpreter(model_path=line.rstrip("\n"))
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        interpreter.invoke()
        print("ok", flush=True)
    except Exception as error:
        print("error " + " ".join(str(error).split())[:500], flush=True)
"""

_worker = None


def _stop_worker():
    if _worker is None:
        return
    if _worker.poll() is None:
        _worker.kill()
        _worker.wait()
    for pipe in (_worker.stdin, _worker.stdout):
        try:
            pipe.close()
        except OSError:  # a pipe to a dead worker may fail to flush
            pass


atexit.register(_stop_worker)


def _start_worker():
    global _worker
    _stop_worker()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    _worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)


TIMEOUT_SECONDS = 120  # a damaged file can also make LiteRT allocate or loop without end


def probe(path, timeout=None):
    """Raises ExportError if LiteRT cannot load and run `path` within `timeout` seconds, or crashes trying;
    returns None if it can."""
    path = os.path.abspath(os.fspath(path))
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    if _worker is None or _worker.poll() is not None:
        _start_worker()
    try:
        _worker.stdin.write(path + "\n")
        _worker.stdin.flush()
        ready, _, _ = select.select([_worker.stdout], [], [], timeout)
        if not ready:
            _stop_worker()  # the next probe starts a fresh worker
            raise ExportError(f"{path}: LiteRT did not finish loading and running it within {timeout} s; "
                              "the file is damaged or far larger than it looks")
        answer = _worker.stdout.readline().strip()
    except BrokenPipeError:
        answer = ""
    if answer == "ok":
        return
    if answer.startswith("error "):
        raise ExportError(f"{path}: not a valid .tflite model ({answer[6:]})")
    code = _worker.wait()
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    raise ExportError(f"{path}: damaged .tflite model: LiteRT crashed loading or running it ({how})")
