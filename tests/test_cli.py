"""The command line answers --help without importing TensorFlow and prints none of TensorFlow's C++ log lines."""

import json
import re
import subprocess
import sys

import keras_mixer_cli
from keras_mixer.benchmark import RUNTIMES
from keras_mixer.export import to_tflite
from keras_mixer.models.mlp_mixer import build_digits_mixer

SUBCOMMANDS = ("demo", "convert", "evaluate-tflite", "export", "train", "evaluate", "qat", "predict", "benchmark",
               "edgetpu-check")
# what TensorFlow / LiteRT / absl print from C++ at start-up and during conversion
NATIVE_LOG_LINE = re.compile(r"^(I|W|E)\d{4} |absl::InitializeLog|oneDNN|cpu_feature_guard|^INFO: |fully_quantize",
                             re.MULTILINE)


def test_help_of_every_command_imports_neither_keras_nor_tensorflow():
    script = ("import contextlib, io, sys, keras_mixer_cli\n"
              f"for argv in [['--help']] + [[c, '--help'] for c in {SUBCOMMANDS!r}]:\n"
              "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
              "        try:\n"
              "            keras_mixer_cli.main(argv)\n"
              "        except SystemExit as done:\n"
              "            assert done.code == 0, argv\n"
              "    assert 'usage: keras-mixer' in out.getvalue(), argv\n"
              "print(sorted(m for m in ('keras', 'tensorflow', 'keras_mixer') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_command_prints_no_tensorflow_log_lines(tmp_path):
    path = to_tflite(build_digits_mixer(), tmp_path / "m.tflite", "float32")
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "evaluate-tflite", str(path), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not NATIVE_LOG_LINE.search(result.stderr + result.stdout), result.stderr[-2000:]
    assert json.loads(result.stdout)["examples"] == 360


def test_benchmark_help_lists_every_runtime():
    assert keras_mixer_cli.BENCHMARK_RUNTIMES == RUNTIMES
