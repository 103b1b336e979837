"""The command line answers --help without importing TensorFlow and prints none of TensorFlow's C++ log lines."""

import json
import os
import re
import subprocess
import sys

import keras
import pytest

from families import outputs
import keras_mixer_cli
from keras_mixer.benchmark import RUNTIMES
from keras_mixer.export import to_tflite
from keras_mixer.models.mlp_mixer import build_digits_mixer

SUBCOMMANDS = ("demo", "convert", "evaluate-tflite", "export", "models", "train", "evaluate", "qat", "predict",
               "benchmark", "edgetpu-check")
# what TensorFlow / LiteRT / absl print from C++ at start-up and during conversion
NATIVE_LOG_LINE = re.compile(r"^(I|W|E)\d{4} |absl::InitializeLog|oneDNN|cpu_feature_guard|^INFO: |fully_quantize",
                             re.MULTILINE)


def test_help_of_every_command_imports_neither_keras_nor_tensorflow():
    script = ("import contextlib, io, sys, keras_mixer_cli\n"
              f"for argv in [['--help'], ['--version']] + [[c, '--help'] for c in {SUBCOMMANDS!r}]:\n"
              "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
              "        try:\n"
              "            keras_mixer_cli.main(argv)\n"
              "        except SystemExit as done:\n"
              "            assert done.code == 0, argv\n"
              "    expected = 'keras-mixer ' if argv == ['--version'] else 'usage: keras-mixer'\n"
              "    assert out.getvalue().startswith(expected), argv\n"
              "print(sorted(m for m in ('keras', 'tensorflow', 'keras_mixer') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_version_is_the_packages_own(capsys):
    """`keras-mixer --version` reads the installed distribution, whose version pyproject.toml takes from
    keras_mixer.__version__ (one place to write it)."""
    import keras_mixer

    with pytest.raises(SystemExit) as exit_info:
        keras_mixer_cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"keras-mixer {keras_mixer.__version__}\n"


def test_a_command_prints_no_tensorflow_log_lines(tmp_path):
    path = to_tflite(build_digits_mixer(), tmp_path / "m.tflite", "float32")
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "evaluate-tflite", str(path), "--json"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not NATIVE_LOG_LINE.search(result.stderr + result.stdout), result.stderr[-2000:]
    assert json.loads(result.stdout)["examples"] == 360


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_command_on_another_backend_prints_no_tensorflow_log_lines(tmp_path, backend):
    build_digits_mixer().save(tmp_path / "m.keras")
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "evaluate", str(tmp_path / "m.keras"), "--json"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not NATIVE_LOG_LINE.search(result.stderr + result.stdout), result.stderr[-2000:]
    assert json.loads(result.stdout)["examples"] == 360


def test_an_unknown_benchmark_runtime_is_one_line_listing_the_known_ones():
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "benchmark", "--runtimes", "tflite_int9"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "tflite_int9" in result.stderr and all(runtime in result.stderr for runtime in RUNTIMES)


# --- bad values: one line naming the flag, exit 2, before any work --------------------------------------------------

BAD_VALUES = [
    (["train", "--epochs", "-3"], "argument --epochs: must be an integer >= 1, got -3"),
    (["train", "--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
    (["train", "--image-size", "7"], "argument --image-size: must be an integer >= 16 and <= 1024, got 7"),
    (["train", "--image-size", "100000"], "argument --image-size: must be an integer >= 16 and <= 1024, got 100000"),
    (["train", "--image-size", "0"], "argument --image-size: must be an integer >= 16 and <= 1024, got 0"),
    (["train", "--label-smoothing", "1.5"], "argument --label-smoothing: must be a number >= 0 and < 1, got 1.5"),
    (["train", "--learning-rate", "nan"], "argument --learning-rate: must be a number > 0, got nan"),
    (["train", "--epochs", "two"], "argument --epochs: must be an integer >= 1, got 'two'"),
    (["predict", "m.keras", "a.png", "--top", "0"], "argument --top: must be an integer >= 1, got 0"),
    (["predict", "m.keras", "a.png", "--crop-fraction", "0"],
     "argument --crop-fraction: must be a number > 0 and <= 1, got 0"),
    (["evaluate-tflite", "m.tflite", "--threads", "0"], "argument --threads: must be an integer >= 1, got 0"),
    (["benchmark", "--batch-sizes", "1", "-2"], "argument --batch-sizes: must be an integer >= 1, got -2"),
    (["export", "m.keras", "m.tflite", "--calibration-samples", "0"],
     "argument --calibration-samples: must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize("field, parse", keras_mixer_cli.RECIPE_OPTIONS, ids=[f for f, _ in keras_mixer_cli.RECIPE_OPTIONS])
def test_recipe_flags_take_what_the_recipe_takes(field, parse):
    """The command line checks its recipe flags without importing keras_mixer; a Recipe checks its fields for
    callers of the Python API. At the edges of every range, the two agree."""
    import argparse

    from keras_mixer.errors import TrainingError
    from keras_mixer.training import get_recipe

    integer = isinstance(getattr(get_recipe("digits"), field), int)
    for text in ("-1", "0", "1e-9", "0.5", "1", "2", "nan", "inf"):
        try:
            parse(text)
            flag_takes = True
        except argparse.ArgumentTypeError:
            flag_takes = False
        value = float(text)
        value = int(value) if integer and value.is_integer() else value
        try:
            get_recipe("digits", **{field: value})
            recipe_takes = True
        except TrainingError:
            recipe_takes = False
        assert flag_takes == recipe_takes, (field, text, flag_takes, recipe_takes)


@pytest.mark.parametrize("argv, message", BAD_VALUES, ids=[" ".join(argv) for argv, _ in BAD_VALUES])
def test_bad_numbers_are_one_line_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        keras_mixer_cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"keras-mixer {argv[0]}: error: {message}\n"


UNRECOGNIZED = [
    (["train", "--lr", "0.1"], "--lr 0.1 (timm's --lr is --learning-rate here)"),
    (["train", "--pretrained", "-b", "64"], "--pretrained -b 64 (timm's --pretrained is --weights imagenet here; "
                                            "timm's -b is --batch-size here)"),
    (["evaluate", "m.keras", "--crop-pct=0.9"], "--crop-pct=0.9 (timm's --crop-pct is --crop-fraction here)"),
    (["qat", "m.keras", "--resume", "r"], "--resume r (timm's --resume: a run resumes by itself (the same command, "
                                          "the same --output))"),
    (["train", "--learnin-rate", "0.1"], "--learnin-rate 0.1 (did you mean --learning-rate?)"),
    (["demo", "--resume"], "--resume"),  # the demo does not resume: no hint
    (["export", "a.keras", "b.tflite", "c.tflite"], "c.tflite"),
]


@pytest.mark.parametrize("argv, unrecognized", UNRECOGNIZED, ids=[" ".join(argv) for argv, _ in UNRECOGNIZED])
def test_an_unknown_flag_is_one_line_naming_the_command_and_the_flag_meant(argv, unrecognized, capsys):
    """argparse's line named neither the command (`keras-mixer: error: unrecognized arguments: --lr 0.1`) nor our
    flag for the timm flag typed from habit or the near miss."""
    with pytest.raises(SystemExit) as exit_info:
        keras_mixer_cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err == f"keras-mixer {argv[0]}: error: unrecognized arguments: {unrecognized}\n"


@pytest.mark.parametrize("argv", [["evaluate", "{run}"], ["qat", "{run}"], ["export", "{run}", "m.tflite"],
                                  ["predict", "{run}", "cat.jpg"], ["train", "--model", "{run}"],
                                  ["evaluate-tflite", "{run}"]], ids=lambda argv: argv[0])
def test_a_run_folder_given_as_the_model_names_the_models_inside(argv, tmp_path, capsys):
    """`train --output runs/float` writes runs/float/model.keras; the folder given as the model was 'does not
    exist', 'unknown model' or 'no such .tflite file' (it exists)."""
    run = tmp_path / "runs" / "float"
    run.mkdir(parents=True)
    (run / "model.keras").write_bytes(b"")
    (run / "model_int8.tflite").write_bytes(b"")
    (run / "report.json").write_text("{}")
    code = keras_mixer_cli.main([part.format(run=run) for part in argv])
    err = capsys.readouterr().err
    files = f"{run / 'model_int8.tflite'}" if argv[0] == "evaluate-tflite" else \
        f"{run / 'model.keras'}, {run / 'model_int8.tflite'}"
    assert code == 2 and err == f"keras-mixer {argv[0]}: error: {run} is a folder, not a model file; give one of its " \
                                f"files: {files}\n"


def test_evaluate_crop_fraction_reaches_the_evaluation(monkeypatch, tmp_path):
    """`evaluate --crop-fraction` (timm validate.py's --crop-pct) overrides the crop the file recorded."""
    from keras_mixer.errors import TrainingError
    from keras_mixer.training import evaluate, trainer
    from keras_mixer.weights import save_model

    crops = []

    def pipeline(source, image_size, batch_size, recipe, training):
        crops.append(recipe.eval_crop_fraction)
        raise KeyboardInterrupt  # stop before evaluating: what matters is what the pipeline was given

    monkeypatch.setattr(trainer, "make_pipeline", pipeline)
    model = build_digits_mixer()
    recorded = save_model(model, tmp_path / "m.keras", crop_fraction=0.875)
    for source, crop_fraction in ((model, None), (recorded, None), (recorded, 0.5)):
        with pytest.raises(KeyboardInterrupt):
            evaluate(source, "digits", crop_fraction=crop_fraction)
    assert crops == [None, 0.875, 0.5]  # None: digits' own (no crop)
    with pytest.raises(TrainingError, match="crop_fraction must be a number > 0 and <= 1, got True"):
        evaluate(model, "digits", crop_fraction=True)
    seen = []
    import keras_mixer.training

    monkeypatch.setattr(keras_mixer.training, "evaluate", lambda *args, **kwargs: seen.append(kwargs) or 1 / 0)
    with pytest.raises(ZeroDivisionError):
        keras_mixer_cli.main(["evaluate", "m.keras", "--crop-fraction", "0.9"])
    assert seen[0]["crop_fraction"] == 0.9


def test_benchmark_onto_a_file_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    """It was refused only after every measurement had run (minutes to hours)."""
    from keras_mixer import benchmark

    def measure(*args):
        raise AssertionError("measured before the output folder was checked")

    monkeypatch.setattr(benchmark, "_subprocess", measure)
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    code = keras_mixer_cli.main(["benchmark", "--runtimes", "matmul_peak_int8", "--output", str(notes)])
    assert code == 2 and capsys.readouterr().err.strip() == (f"keras-mixer benchmark: error: --output {notes} is a "
                                                             "file, not a folder")
    assert notes.read_text() == "the user's notes"


@pytest.mark.parametrize("flag, names", [("--runtimes", "tflite_int8,keras_tf"), ("--models", "mixer_s16,mixer_b16")])
def test_benchmark_names_joined_by_commas_are_answered_with_spaces(flag, names, tmp_path, capsys):
    code = keras_mixer_cli.main(["benchmark", flag, names, "--output", str(tmp_path / "bench")])
    assert code == 2 and capsys.readouterr().err == (f"keras-mixer benchmark: error: {flag} {names}: separate the "
                                                     f"names with spaces ({flag} {names.replace(',', ' ')})\n")
    assert not (tmp_path / "bench").exists()


def test_benchmark_refuses_an_unknown_model_with_the_nearest_name(tmp_path, capsys):
    code = keras_mixer_cli.main(["benchmark", "--models", "mixer_s3", "--output", str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert code == 2 and "--models mixer_s3: not a Mixer variant; did you mean mixer_s32?" in err
    assert not (tmp_path / "bench").exists()


def test_unwritable_outputs_are_one_line(tmp_path, capsys):
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    (tmp_path / "folder.tflite").mkdir()
    code = keras_mixer_cli.main(["export", str(model), str(tmp_path / "folder.tflite"), "--quantization", "float32"])
    assert code == 2 and capsys.readouterr().err == (f"keras-mixer export: error: {tmp_path / 'folder.tflite'} is a "
                                                     "folder, not a file\n")


@pytest.mark.parametrize("argv, output", [
    (["convert", "{tmp}/ckpt.npz", "{out}.keras"], "{out}.keras"),
    (["export", "{tmp}/m.keras", "{out}.tflite", "--quantization", "float32"], "{out}.tflite"),
    (["export", "{tmp}/m.keras", "{tmp}/m.tflite", "--calibration", "digits", "--report", "{out}.json"], "{out}.json"),
    (["evaluate-tflite", "{tmp}/m.tflite", "--confusion-matrix", "{out}.png"], "{out}.png"),
    (["train", "--steps", "1", "--output", "{out}"], "--output {out}"),
    (["demo", "--output", "{out}"], "--output {out}"),
    (["benchmark", "--runtimes", "matmul_peak_int8", "--output", "{out}"], "--output {out}"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_an_output_under_a_file_is_refused_before_any_work(argv, output, tmp_path, capsys, monkeypatch):
    """A file among the folders of an output path was found only when the output was written: after a checkpoint's
    conversion, an export, an evaluation (`cannot write it (File exists)`), or as `Not a directory` in training."""
    from keras_mixer import benchmark
    from keras_mixer.export import tflite

    def work(*args, **kwargs):
        raise AssertionError("the work ran before its output path was checked")

    build_digits_mixer().save(tmp_path / "m.keras")
    if argv[0] == "evaluate-tflite":
        to_tflite(build_digits_mixer(), tmp_path / "m.tflite", "float32")
    monkeypatch.setattr(tflite, "_converter", work)
    monkeypatch.setattr(benchmark, "_subprocess", work)
    (tmp_path / "ckpt.npz").write_bytes(b"not read before the output is checked")
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    fill = dict(tmp=tmp_path, out=notes / "out")
    code = keras_mixer_cli.main([part.format(**fill) for part in argv])
    assert code == 2 and capsys.readouterr().err == (f"keras-mixer {argv[0]}: error: {output.format(**fill)} cannot be "
                                                     f"written: {notes} is a file, not a folder\n")
    assert notes.read_text() == "the user's notes"


def test_an_output_in_a_folder_without_write_permission_is_named(tmp_path, monkeypatch):
    from keras_mixer.io_utils import output_problem

    assert output_problem(tmp_path / "new" / "m.tflite") is None and output_problem(tmp_path, folder=True) is None
    monkeypatch.setattr("os.access", lambda path, mode: os.fspath(path) != str(tmp_path))  # root may write anywhere
    assert output_problem(tmp_path / "new" / "m.tflite") == f"cannot be written: no permission to write in {tmp_path}"
    assert output_problem(tmp_path / "run", folder=True) == f"cannot be written: no permission to write in {tmp_path}"


@pytest.mark.parametrize("output", ["m.keras", "out/x.keras", "model.bin"])
def test_export_never_writes_over_its_input_nor_under_another_suffix(tmp_path, capsys, output):
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    before = model.read_bytes()
    code = keras_mixer_cli.main(["export", str(model), str(tmp_path / output), "--quantization", "float32"])
    err = capsys.readouterr().err
    assert code == 2 and "name the file *.tflite" in err and len(err.strip().splitlines()) == 1
    assert model.read_bytes() == before and not (tmp_path / "out").exists() and not (tmp_path / "model.bin").exists()


@pytest.mark.parametrize("command, flag, refusal", [
    ("export", "--report", "the quantization report is JSON; name the file *.json"),
    ("evaluate-tflite", "--confusion-matrix", "the confusion matrix is a PNG image; name the file *.png"),
])
def test_a_report_or_figure_path_naming_a_model_is_refused_before_any_work(tmp_path, capsys, command, flag, refusal):
    """Both wrote their JSON or PNG over whatever file was named (a model.keras given by mistake was replaced),
    the confusion matrix after the whole evaluation."""
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    before = model.read_bytes()
    first = [str(model), str(tmp_path / "m.tflite")] if command == "export" else [str(tmp_path / "missing.tflite")]
    code = keras_mixer_cli.main([command, *first, flag, str(model)])
    assert code == 2 and capsys.readouterr().err.strip() == f"keras-mixer {command}: error: {model}: {refusal}"
    assert model.read_bytes() == before


def test_export_onto_its_own_input_through_a_link_is_refused(tmp_path, capsys):
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    (tmp_path / "same.tflite").symlink_to(model)
    code = keras_mixer_cli.main(["export", str(model), str(tmp_path / "same.tflite"), "--quantization", "float32"])
    err = capsys.readouterr().err
    assert code == 2 and "never writes over its own input" in err
    assert keras.models.load_model(model).name == "mixer_digits"


def test_evaluate_at_another_image_size_than_the_model_takes_is_one_line(tmp_path, capsys):
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    code = keras_mixer_cli.main(["evaluate", str(model), "--image-size", "64"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == ("keras-mixer evaluate: error: --image-size 64 does not match the model's input "
                                         "size 32")


def test_predict_with_weights_it_cannot_download_is_one_line(tmp_path, capsys, monkeypatch):
    """Offline (as this machine and CI are): one error line, no warning about the file's hash before it."""
    from PIL import Image

    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    import warnings

    Image.new("RGB", (40, 30)).save(tmp_path / "x.jpg")
    with warnings.catch_warnings(record=True) as caught:  # a warning prints its own lines outside pytest
        warnings.simplefilter("always")
        code = keras_mixer_cli.main(["predict", "mixer_s16", str(tmp_path / "x.jpg"), "--weights", "imagenet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("keras-mixer predict: error: could not download")
    assert not [str(warning.message) for warning in caught if "hash" in str(warning.message)]


def test_export_writes_a_release_with_its_class_names(tmp_path, capsys, monkeypatch):
    """`keras-mixer export mixer_s32 --weights imagenet out.tflite`, as predict and evaluate take a release: the
    file computes the model built from the same checkpoint, with ImageNet's class names in its metadata (export
    took .keras files only: 'model file mixer_s32 does not exist')."""
    import warnings

    import numpy as np

    import keras_mixer
    from keras_mixer.export import load_interpreter, predict, read_metadata
    from keras_mixer.weights import resolve
    from mixer_reference import random_params

    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / resolve("mixer_s32", "gsam").filename, **random_params(rng, 32, 3, 512, 49, 256, 2048, 8, 1000))
    code = keras_mixer_cli.main(["export", "mixer_s32", "--weights", "imagenet", str(tmp_path / "s32.tflite"),
                                 "--quantization", "float32"])
    err = capsys.readouterr().err
    # keras_mixer's warnings on the command line are one line (Python's name the source file and line of code)
    assert code == 0 and err.splitlines() == [
        "keras-mixer export: warning: https://storage.googleapis.com/mixer_models/gsam/Mixer-S_32.npz has no "
        "published hash; it is used unverified"], err
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no published hash")
        model = keras_mixer.MixerS32(weights="imagenet")
    labels = read_metadata(tmp_path / "s32.tflite")["labels"]
    assert len(labels) == 1000 and labels[:2] == ["tench", "goldfish"]
    x = rng.uniform(-1, 1, (2, 224, 224, 3)).astype("float32")
    want = outputs(model, x)
    assert want.max() > 2 * want.min()  # softmax rows that differ from a uniform 1/1000
    np.testing.assert_allclose(predict(load_interpreter(tmp_path / "s32.tflite"), x), want, atol=1e-5)
    code = keras_mixer_cli.main(["export", str(tmp_path / "s32.tflite"), str(tmp_path / "x.tflite"), "--weights",
                                 "imagenet"])
    assert code == 2 and "--weights load into a registry model" in capsys.readouterr().err


def test_predict_with_a_registry_name_and_no_weights_is_refused_naming_the_tags(tmp_path, capsys):
    """Untrained weights would print ImageNet labels as predictions (all 0.1 %: a Mixer's head starts at zero)."""
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "x.jpg")
    for name, choices in (("mixer_s16", "a pretrained tag (gsam, imagenet) or a checkpoint file"),
                          ("raft_mlp_s", "a checkpoint file (it has no pretrained release)")):
        code = keras_mixer_cli.main(["predict", name, str(tmp_path / "x.jpg")])
        assert code == 2 and capsys.readouterr().err.strip() == (
            f"keras-mixer predict: error: {name!r} without weights is untrained: give weights (--weights on the "
            f"command line): {choices}")


def test_export_on_another_backend_is_one_line_naming_tensorflow(tmp_path):
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    result = subprocess.run([sys.executable, "-c", "import sys; from keras_mixer_cli import main; sys.exit(main())",
                             "export", str(model), str(tmp_path / "m.tflite"), "--quantization", "float32"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 2 and result.stderr.strip() == (
        "keras-mixer export: error: TFLite export runs on the TensorFlow backend and this process runs jax: run it "
        "with KERAS_BACKEND=tensorflow (a .keras file trained on any backend loads there)")
    assert not (tmp_path / "m.tflite").exists()


def test_train_output_that_is_a_file_is_one_line(tmp_path, capsys):
    output = tmp_path / "notes.txt"
    output.write_text("the user's file")
    code = keras_mixer_cli.main(["train", "--steps", "1", "--output", str(output)])
    assert code == 2 and capsys.readouterr().err == (f"keras-mixer train: error: --output {output} is a file, not a "
                                                     "run folder\n")
    assert output.read_text() == "the user's file"


@pytest.mark.parametrize("example, flags, message", [
    ("qat_and_export.py", ["--model", "missing.keras"], "--model model file 'missing.keras' does not exist"),
    ("finetune.py", ["--model", "mixer_zz", "--weights", "", "--dataset", "digits"], "unknown model 'mixer_zz'"),
])
def test_the_examples_answer_a_mistyped_flag_in_one_line(example, flags, message, tmp_path):
    """The examples are command lines too: a file that is not there or a name that is not known is one line naming
    it (exit 2), and no output folder is made."""
    script = os.path.join(os.path.dirname(__file__), "..", "examples", example)
    result = subprocess.run([sys.executable, script, *flags], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [line for line in result.stderr.splitlines() if not NATIVE_LOG_LINE.search(line)]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"{example}: error: {message}"), \
        result.stderr
    assert not list(tmp_path.iterdir())


def real_out_of_memory_errors():
    """(error, what the line names) of each backend running out of memory, raised by asking it for terabytes."""
    import jax.numpy as jnp
    import numpy as np
    import tensorflow as tf
    import torch

    found = []
    for allocate, what in ((lambda: tf.zeros([2 ** 38]), "OOM when allocating tensor with shape[274877906944] and "
                            "type float on /job:localhost/replica:0/task:0/device:CPU:0"),
                           (lambda: torch.empty(2 ** 45), "can't allocate memory: you tried to allocate "
                            "140737488355328 bytes"),
                           (lambda: jnp.zeros(2 ** 40, jnp.float32).block_until_ready(),
                            "Out of memory allocating 4398046511104 bytes."),
                           (lambda: np.empty(2 ** 55, np.uint8), "the host's memory (Unable to allocate")):
        try:
            allocate()
        except Exception as error:  # each backend's own type
            found.append((error, what))
    assert len(found) == 4
    return found


def test_running_out_of_memory_is_one_line_saying_what_did_not_fit_and_which_flag_needs_less(
        tmp_path, capsys, monkeypatch):
    """A batch too large for the device was TensorFlow's, torch's or JAX's traceback (40 frames, for
    `train --batch-size 100000`); `train`'s run folder then records that batch, so the line says how to run again."""
    import keras_mixer.cli

    def raising(error, made=None):
        def command(args):
            if made:
                os.makedirs(getattr(args, made))  # as train makes its run folder before the first step
            raise error
        return command

    errors = real_out_of_memory_errors()
    for index, (error, what) in enumerate(errors):
        monkeypatch.setitem(keras_mixer.cli.COMMANDS, "train", raising(error, made="output"))
        output = tmp_path / f"run{index}"
        assert keras_mixer_cli.main(["train", "--dataset", "digits", "--batch-size", "100000",
                                     "--output", str(output)]) == 2
        line = capsys.readouterr().err
        assert line.startswith(f"keras-mixer train: error: out of memory: {what}"), line
        assert line.endswith(f"; a smaller --batch-size (now 100000) needs less: run again with it and --overwrite "
                             f"({output} holds this run's settings)\n") and line.count("\n") == 1, line
    error, what = errors[0]
    monkeypatch.setitem(keras_mixer.cli.COMMANDS, "export", raising(error))
    assert keras_mixer_cli.main(["export", "m.keras", str(tmp_path / "m.tflite")]) == 2
    assert capsys.readouterr().err == (f"keras-mixer export: error: out of memory: {what}; --route blocks converts "
                                       "a piece at a time\n")
    monkeypatch.setitem(keras_mixer.cli.COMMANDS, "export", raising(RuntimeError("bug")))
    with pytest.raises(RuntimeError, match="bug"):  # any other error stays itself
        keras_mixer_cli.main(["export", "m.keras", str(tmp_path / "m.tflite")])


@pytest.mark.parametrize("flags, expected", [([], (2, 15)), (["--randaugment", "1", "5"], (1, 5)),
                                             (["--no-randaugment"], None)],
                         ids=["recipe", "randaugment_1_5", "no_randaugment"])
def test_randaugment_flags_reach_the_recipe(flags, expected, monkeypatch):
    import keras_mixer.cli
    from keras_mixer.training import get_recipe

    seen = []
    monkeypatch.setattr(keras_mixer.cli, "run", lambda args: seen.append(args) or 0)
    assert keras_mixer_cli.main(["train", "--recipe", "scratch", *flags]) == 0
    assert get_recipe(seen[0].recipe, **seen[0].recipe_overrides).randaugment == expected


def test_randaugment_and_no_randaugment_together_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        keras_mixer_cli.main(["train", "--randaugment", "2", "9", "--no-randaugment"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and "--no-randaugment" in err


def test_models_lists_each_release_of_the_matching_variants(capsys):
    """`keras-mixer models` is timm's list_models and pretrained configs on the command line: a line per release
    (the one `imagenet` names marked), '-' for a variant without one; a pattern that matches nothing is one line."""
    import keras_mixer
    from keras_mixer.weights.pretrained import resolve

    assert keras_mixer_cli.main(["models", "*b16*", "vip_small*"]) == 0
    out = capsys.readouterr().out
    table, footer = out.split("\n\n")
    releases = {}
    for line in table.splitlines()[1:]:  # below the header: a model's name opens its first line
        cells = line.split()
        if not line.startswith(" "):
            model = cells.pop(0)
        releases.setdefault(model, []).append(cells[0])
    assert list(releases) == ["mixer_b16", "vip_small14", "vip_small7"] and footer.startswith("3 models.")
    assert releases["mixer_b16"] == [tag for tag in keras_mixer.list_pretrained("mixer_b16") if tag != "imagenet"]
    assert releases["vip_small14"] == releases["vip_small7"] == ["-"]
    default = resolve("mixer_b16", "imagenet")
    assert re.search(rf"\n +{default.tag} \(imagenet\) +1,000 +{default.top1:.1f} %\n", table)
    assert re.search(r"\nmixer_b16 +goog_in21k +21,843\n", table)

    assert keras_mixer_cli.main(["models", "--pretrained", "vip_*"]) == 2
    assert capsys.readouterr().err == ("keras-mixer models: error: no model with a release matches vip_*; keras-mixer "
                                       "models lists all 30\n")
    assert keras_mixer_cli.main(["models", "mixer"]) == 2
    assert "no model matches mixer (a name without wildcards matches itself only: try '*mixer*')" in (
        capsys.readouterr().err)


def test_int8_flags_on_a_float_export_are_one_line(tmp_path, capsys):
    """`--calibration`, `--no-equalize`, `--integer-only`, ... with `--quantization float16` changed nothing, without
    a word (the file was float16, its activations float): one line naming them, nothing written."""
    model = tmp_path / "m.keras"
    build_digits_mixer().save(model)
    code = keras_mixer_cli.main(["export", str(model), str(tmp_path / "m.tflite"), "--quantization", "float16",
                                 "--calibration", "digits", "--no-equalize", "--integer-only"])
    assert code == 2 and capsys.readouterr().err == (
        "keras-mixer export: error: --calibration, --no-equalize, --integer-only: for int8/uint8 exports; "
        "--quantization float16 keeps float activations, with no ranges to calibrate\n")
    assert not (tmp_path / "m.tflite").exists()
    assert keras_mixer_cli.main(["export", str(model), str(tmp_path / "m.tflite"), "--quantization", "dynamic",
                                 "--calibration-method", "mse"]) == 2
    assert "--calibration-method: for int8/uint8 exports" in capsys.readouterr().err
