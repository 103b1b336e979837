"""The `keras-mixer` command line's parser: a package of its own, so that `keras-mixer --help` and every
subcommand's `--help` answer without importing keras_mixer (and so TensorFlow). The commands run in
`keras_mixer.cli` (`run`), which imports nothing from here: the dependency goes one way."""

import argparse
import difflib
import importlib.metadata
import importlib.util
import math
import os
import re
import sys


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad flag or value as one line (`keras-mixer train: error: argument --epochs: must be an
    integer >= 1, got -3`, exit 2) instead of the usage block first."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(kind, low=None, high=None, low_open=False, high_open=False):
    """An argparse type: `kind` (int or float), finite, within [low, high] (open ends where asked); the message
    states the allowed range."""
    bounds = [f"{'>' if low_open else '>='} {low}" if low is not None else "",
              f"{'<' if high_open else '<='} {high}" if high is not None else ""]
    allowed = f"{'an integer' if kind is int else 'a number'} {' and '.join(b for b in bounds if b)}".strip()

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}")
        return value

    parse.__name__ = allowed  # what argparse names in its own messages
    return parse


COUNT = _number(int, 1)  # epochs, steps, batch sizes, images, threads, ...
INDEX = _number(int, 0)
IMAGE_SIZE = _number(int, 16, 1024)  # below, no family's stem fits; above, the token MLPs outgrow memory
FRACTION = _number(float, 0, 1, low_open=True)
RATE = _number(float, 0, 1, high_open=True)
NON_NEGATIVE = _number(float, 0)
POSITIVE = _number(float, 0, low_open=True)

# recipe fields `keras-mixer train` can override, as --learning-rate etc., with their allowed values
RECIPE_OPTIONS = (("learning_rate", POSITIVE), ("weight_decay", NON_NEGATIVE),
                  ("warmup_steps", INDEX), ("label_smoothing", RATE), ("mixup_alpha", NON_NEGATIVE),
                  ("cutmix_alpha", NON_NEGATIVE), ("drop_path_rate", RATE), ("dropout_rate", RATE))

# timm's train.py / validate.py flags a timm user types from habit -> ours (an unknown flag says which to use)
TIMM_FLAGS = {"--lr": "--learning-rate", "--drop-path": "--drop-path-rate", "--drop": "--dropout-rate",
              "--smoothing": "--label-smoothing", "--mixup": "--mixup-alpha", "--cutmix": "--cutmix-alpha",
              "--img-size": "--image-size", "-b": "--batch-size", "--pretrained": "--weights imagenet",
              "--checkpoint": "--weights FILE", "--initial-checkpoint": "--weights FILE",
              "--crop-pct": "--crop-fraction",
              "--aa": "--randaugment NUM_OPS MAGNITUDE", "--amp": "--precision mixed_bfloat16",
              "--warmup-epochs": "--warmup-steps",
              "--resume": "a run resumes by itself (the same command, the same --output)"}

DATASET_HELP = ("digits (offline), an image folder (one sub-folder per class, optionally inside train/ and val/) "
                "or a tfds name (cifar10, imagenette, imagenet2012, ...)")


def _add_precision_argument(parser):
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                        help="auto (default): bfloat16 on GPUs with bfloat16 tensor cores and on TPUs, float16 on "
                             "older GPUs, float32 on CPUs; the run prints what it chose")


def _add_dataset_arguments(parser, image_size=True, flag="--dataset", default="digits"):
    parser.add_argument(flag, default=default, help=DATASET_HELP + (f" (default: {default})" if default else ""))
    parser.add_argument("--data-dir", help="tfds data directory (default: ~/tensorflow_datasets)")
    parser.add_argument("--download", action="store_true", help="let tfds download and prepare the dataset")
    if image_size:
        parser.add_argument("--image-size", type=IMAGE_SIZE, help="input size (default: 32 for digits, else 224)")


def _installed_version():
    """The installed distribution's version (pyproject.toml takes it from keras_mixer.__version__), read without
    importing keras_mixer, which imports TensorFlow."""
    try:
        return importlib.metadata.version("keras-mixer")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed: run from a source tree)"


def build_parser():
    parser = _Parser(prog="keras-mixer", description="MLP-Mixer models for Keras 3.")
    parser.add_argument("--version", action="version", version=f"keras-mixer {_installed_version()}")
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow's own log lines")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="offline digits demo: train -> QAT -> int8 .tflite -> evaluate -> report"
    )
    demo.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=COUNT, default=30, help="float training epochs (default: 30)")
    demo.add_argument("--qat-epochs", type=COUNT, default=5, help="quantization-aware fine-tuning epochs (default: 5)")
    demo.add_argument("--batch-size", type=COUNT, default=64)
    demo.add_argument("--seed", type=int, default=0)

    convert = commands.add_parser(
        "convert", help="convert an official .npz or timm .pth/.safetensors Mixer checkpoint to .keras/.weights.h5"
    )
    convert.add_argument("input", help="checkpoint file (.npz, .pth, .bin, .safetensors)")
    convert.add_argument("output", help="output file (.keras or .weights.h5)")
    convert.add_argument(
        "--gelu", choices=["tanh", "exact"], help="GELU form (default: tanh for official .npz, exact for timm files)"
    )
    for flag, kind in (("--mean", _number(float)), ("--std", POSITIVE)):
        convert.add_argument(flag, nargs=3, type=kind, metavar=("R", "G", "B"),
                             help=f"the pixel {flag[2:]} (pixels / 255, timm's convention) the checkpoint was trained "
                                  "on, folded into the model (default: what timm's config.json beside it records, "
                                  "else [-1, 1]: 0.5 0.5 0.5)")

    evaluate = commands.add_parser("evaluate-tflite", help="top-1/top-5, agreement and latency of a .tflite model")
    evaluate.add_argument("model", help=".tflite file")
    _add_dataset_arguments(evaluate, image_size=False)
    evaluate.add_argument("--crop-fraction", type=FRACTION,
                          help="evaluation crop (default: the dataset's: 1.0 for folders and digits, 0.875 for tfds)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (top1, top5, examples, ...)")
    evaluate.add_argument("--reference", help="Keras model (.keras) to measure argmax agreement with")
    evaluate.add_argument("--threads", type=COUNT, default=1, help="interpreter threads (default: 1)")
    evaluate.add_argument("--confusion-matrix", help="write a confusion-matrix PNG here")

    export = commands.add_parser("export", help="export a .keras model to .tflite (with metadata and labels)")
    export.add_argument("model", help=".keras model (float or QAT), or a registry name with --weights")
    export.add_argument("output", help=".tflite file to write")
    export.add_argument("--weights", help="with a registry name: pretrained tag (imagenet, ...) or checkpoint file")
    export.add_argument("--quantization", choices=["float32", "float16", "dynamic", "int8", "uint8"], default="int8")
    export.add_argument("--calibration", metavar="SRC",
                        help="int8/uint8: calibration images from SRC's training split, preprocessed as for "
                             "evaluation (" + DATASET_HELP + ")")
    export.add_argument("--calibration-samples", type=COUNT, help="int8/uint8: calibration images (default: 256)")
    export.add_argument("--data-dir", help="tfds data directory for --calibration")
    export.add_argument("--download", action="store_true", help="let tfds download --calibration's dataset")
    export.add_argument("--labels", help="text file with one class name per line, embedded in the metadata "
                                         "(default: the class names recorded by `keras-mixer train`)")
    export.add_argument("--batch-size", type=COUNT, default=1)
    export.add_argument("--float-io", action="store_true", help="int8/uint8 inside, float32 input and output")
    export.add_argument("--integer-only", action="store_true",
                        help="quantize every op (Edge TPU, NNAPI); default int8 keeps the elementwise ops, LayerNorm "
                             "statistics and GELU float32, which LiteRT's CPU delegate runs faster")
    export.add_argument("--edgetpu", action="store_true",
                        help="export the Edge-TPU form (edgetpu_model: every family, every op int8 and mappable)")
    export.add_argument("--experts-on-cpu", action="store_true",
                        help="with --edgetpu, a Sparse-MLP maps up to its first expert layer; the rest runs on the CPU")
    export.add_argument("--no-equalize", action="store_true",
                        help="int8/uint8: export the weights as they are, without first moving outlier channels of "
                             "normalized activations into the next layer's weights (same float function)")
    export.add_argument("--calibration-method", choices=["percentile", "mse", "minmax"],
                        help="int8/uint8: each activation's range from 99.99 %% of its values on the calibration "
                             "images (default), the range of least int8 error, or its extremes (min/max)")
    export.add_argument("--route", choices=["auto", "whole", "saved_model", "blocks"], default="auto",
                        help="how the graph converts: whole from memory, whole from a SavedModel on disk, or a chain "
                             "of blocks a piece at a time (least memory); auto: whole up to 256 MB of float32 "
                             "weights, above it by blocks where it applies, else through a SavedModel")
    export.add_argument("--verbose", action="store_true",
                        help="print the export plan (route and why, int8 ranges, what stays float32) before converting")
    export.add_argument("--report", metavar="JSON",
                        help="int8/uint8: write each quantized op's error against float (SQNR), range and outlier "
                             "ratio, worst first, and what equalization did")
    export.add_argument("--float-layers", nargs="+", metavar="PATTERN",
                        help="int8: keep these ops float32: a number N (the N worst ops of the report) or regular "
                             "expressions searched in the report's op names")

    train = commands.add_parser("train", help="train or fine-tune with a recipe; resumes an interrupted run")
    train.add_argument("--model", help="registry name (keras-mixer models lists them) or a .keras file "
                                       "(default on digits: the demo's small Mixer)")
    train.add_argument("--weights", help="pretrained tag (imagenet, ...) or checkpoint file for --model")
    _add_dataset_arguments(train)
    train.add_argument("--recipe", help="finetune | scratch | digits (default: digits on digits, finetune with "
                                        "--weights, else scratch)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=COUNT, help="passes over the training split (default 1)")
    length.add_argument("--steps", type=COUNT, help="optimizer steps")
    train.add_argument("--batch-size", type=COUNT, help="global batch (default: the recipe's)")
    train.add_argument("--checkpoint-every", type=COUNT, help="steps between backups (default: one pass)")
    train.add_argument("--strategy", default="auto",
                       help="auto | default | mirrored | multi_worker | tpu (TensorFlow); data_parallel | "
                            "model_parallel (JAX)")
    train.add_argument("--tpu", help="TPU name or address for --strategy tpu (default: the local TPU VM)")
    train.add_argument("--coordinator", help="several hosts (JAX): address:port of host 0, given to every host")
    train.add_argument("--num-hosts", type=COUNT, default=1, help="with --coordinator: how many hosts")
    train.add_argument("--host-index", type=INDEX, default=0, help="with --coordinator: this host's index")
    _add_precision_argument(train)
    train.add_argument("--output", default="runs/train", help="run folder (default: runs/train)")
    train.add_argument("--overwrite", action="store_true",
                       help="start afresh in a --output that holds a finished or a different run")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deterministic", action="store_true", help="reproducible input pipeline")
    train.add_argument("--no-lr-scaling", action="store_true",
                       help="keep the recipe's learning rate whatever the batch size")
    for field, kind in RECIPE_OPTIONS:
        train.add_argument(f"--{field.replace('_', '-')}", type=kind, help="override the recipe's value")
    randaugment = train.add_mutually_exclusive_group()
    randaugment.add_argument("--randaugment", type=INDEX, nargs=2, metavar=("NUM_OPS", "MAGNITUDE"),
                             help="RandAugment's ops per image and magnitude (the scratch recipe's: 2 15)")
    randaugment.add_argument("--no-randaugment", action="store_true", help="switch off the recipe's RandAugment")

    evaluate_keras = commands.add_parser("evaluate", help="top-1/top-5 of a .keras model on a dataset's eval split")
    evaluate_keras.add_argument("model", help=".keras file, or a registry name with --weights")
    evaluate_keras.add_argument("--weights", help="with a registry name: pretrained tag (imagenet, ...) or checkpoint "
                                                  "file")
    _add_dataset_arguments(evaluate_keras)
    evaluate_keras.add_argument("--batch-size", type=COUNT, default=256)
    evaluate_keras.add_argument("--crop-fraction", type=FRACTION,
                                help="evaluation crop (default: the one the .keras file recorded, else the dataset's: "
                                     "1.0 for folders and digits, 0.875 for tfds)")
    evaluate_keras.add_argument("--json", action="store_true", help="print one JSON object (top1, top5, examples)")

    qat = commands.add_parser("qat", help="quantization-aware fine-tuning of a trained .keras model on your data "
                                          "(resumes an interrupted run)")
    qat.add_argument("model", help="trained float model (.keras)")
    _add_dataset_arguments(qat, image_size=False)
    qat_length = qat.add_mutually_exclusive_group()
    qat_length.add_argument("--epochs", type=COUNT, help="passes over the training split (default 1)")
    qat_length.add_argument("--steps", type=COUNT, help="optimizer steps")
    qat.add_argument("--batch-size", type=COUNT, help="global batch (default: 64)")
    qat.add_argument("--calibration-samples", type=COUNT, default=256,
                     help="training images that set the initial int8 ranges (default: 256)")
    qat.add_argument("--checkpoint-every", type=COUNT, help="steps between backups (default: one pass)")
    qat.add_argument("--learning-rate", type=POSITIVE, help="peak learning rate (default: 1e-4 at batch 64)")
    qat.add_argument("--output", default="runs/qat", help="run folder (default: runs/qat)")
    qat.add_argument("--overwrite", action="store_true",
                     help="start afresh in a --output that holds a finished or a different run")
    qat.add_argument("--seed", type=int, default=0)
    _add_precision_argument(qat)

    predict = commands.add_parser("predict", help="classify image files with a .keras, .tflite or pretrained model")
    predict.add_argument("model", help=".keras file, .tflite file, or a registry name with --weights")
    predict.add_argument("images", nargs="+", help="image files (any format and size PIL reads) or folders of them")
    predict.add_argument("--weights", help="with a registry name: pretrained tag (imagenet, ...) or checkpoint file")
    predict.add_argument("--top", type=COUNT, default=5, help="classes per image (default: 5)")
    predict.add_argument("--crop-fraction", type=FRACTION, help="override the model's evaluation crop")
    predict.add_argument("--json", action="store_true",
                         help='print [{"image": path, "top": [{"label", "index", "score"}, ...]}, ...]')

    bench = commands.add_parser("benchmark", help="latency of the same weights in TFLite, Keras, timm, litert-torch "
                                                  "and ONNX Runtime, and the matmul peak, side by side "
                                                  "(results.json/.csv, table.md, latency.png)")
    bench.add_argument("--models", nargs="+", default=["mixer_s32"], help="Mixer variants (default: mixer_s32)")
    # the runtimes are keras_mixer.benchmark's to name (importing it would load TensorFlow into --help): an unknown
    # name is refused with the list
    bench.add_argument("--runtimes", nargs="+", help="runtimes to measure (default: every one; e.g. tflite_int8 "
                       "timm_eager litert_torch_dynamic_int8 matmul_peak_int8)")
    bench.add_argument("--batch-sizes", nargs="+", type=COUNT, default=[1, 8])
    bench.add_argument("--threads", nargs="+", type=COUNT, default=[1, 2])
    bench.add_argument("--runs", type=COUNT, default=50, help="timed runs per measurement, after 5 warm-up runs")
    bench.add_argument("--output", default="runs/benchmark")

    models = commands.add_parser("models", help="the model variants and their pretrained releases (as timm's "
                                                "list_models)")
    models.add_argument("patterns", nargs="*", help="wildcard patterns, any of which a name matches ('*b16*', "
                                                   "'hire_mlp_*'; default: every model)")
    models.add_argument("--pretrained", action="store_true", help="only the models with a release")

    edgetpu = commands.add_parser("edgetpu-check", help="which ops of a .tflite the Coral Edge TPU would map")
    edgetpu.add_argument("model", help=".tflite file")
    edgetpu.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.command_parsers = commands.choices
    return parser


def _refuse_unrecognized(command_parser, extra):
    """One line naming what the command does not take, with its flag where the user typed timm's or a near miss:
    argparse's own line named neither the command (`keras-mixer: error: unrecognized arguments: --lr 0.1`)."""
    flags = set(re.findall(r"(?<![\w-])--?[a-z][\w-]*", command_parser.format_help()))
    hints = []
    for token in (token.split("=")[0] for token in extra if token.startswith("-")):
        ours = TIMM_FLAGS.get(token, "")
        if ours.split(" ")[0] in flags:
            hints.append(f"timm's {token} is {ours} here")
        elif ours and not ours.startswith("-") and "--overwrite" in flags:  # train and qat resume
            hints.append(f"timm's {token}: {ours}")
        elif close := difflib.get_close_matches(token, sorted(flags), n=1, cutoff=0.75):
            hints.append(f"did you mean {close[0]}?")
    command_parser.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else ""))


def main(argv=None):
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _refuse_unrecognized(parser.command_parsers[args.command], extra)
    # the recipe fields given as flags, as `train(**overrides)` takes them (the commands need not know the flags)
    args.recipe_overrides = {field: getattr(args, field) for field, _ in RECIPE_OPTIONS
                             if getattr(args, field, None) is not None}
    if getattr(args, "randaugment", None):
        args.recipe_overrides["randaugment"] = tuple(args.randaugment)
    if getattr(args, "no_randaugment", False):
        args.recipe_overrides["randaugment"] = None  # get_recipe's None: the field switched off
    if args.verbose:
        from keras_mixer.cli import run
    else:
        # before TensorFlow is first imported: its C++ start-up lines (oneDNN, CPU features, absl) are noise here.
        # TensorFlow 2.21 writes some of them before it reads the level (absl's pre-init warning, and the oneDNN
        # notice on AVX-512 machines), so the import runs with file descriptor 2 sent to /dev/null; an import that
        # fails still raises its exception after it
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # ERROR lines too: a damaged JPEG logs one from C++
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            from keras_mixer.cli import run

            # on the JAX and torch backends the commands still read data with tf.data: its start-up lines too
            if importlib.util.find_spec("tensorflow") is not None:
                import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
