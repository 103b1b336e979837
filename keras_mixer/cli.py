"""The `keras-mixer` command line."""

import argparse
import os
import sys

from keras_mixer.errors import KerasMixerError


def _demo(args):
    from keras_mixer.demo import run_demo

    # A live progress bar on a terminal; one line per epoch in logs (CI), where a redrawn bar is noise.
    verbose = 1 if sys.stdout.isatty() else 2
    run_demo(args.output, epochs=args.epochs, qat_epochs=args.qat_epochs, batch_size=args.batch_size, seed=args.seed,
             verbose=verbose)


def _convert(args):
    from keras_mixer.models.mlp_mixer import convert_checkpoint

    model = convert_checkpoint(args.input, args.output, gelu=args.gelu)
    print(f"\nwrote {args.output}: {model.name}, {model.count_params():,} params, input {model.input_shape[1:]}")


def _print_report(report, as_json):
    """One JSON object on stdout (--json), else `key: value` lines."""
    import json

    if as_json:
        print(json.dumps(report))
        return
    for key, value in report.items():
        print(f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}")


def _evaluate_tflite(args):
    import numpy as np

    from keras_mixer.datasets import eval_batches, load_source
    from keras_mixer.export import evaluate_tflite, load_interpreter, plot_confusion_matrix

    size = int(load_interpreter(args.model).get_input_details()[0]["shape"][1])
    source = load_source(args.dataset, "eval", args.data_dir, args.download, size)
    reference = None
    if args.reference:
        from keras_mixer.weights import load_keras_model

        reference = load_keras_model(args.reference)
    labels = []

    def batches():  # keeps the labels for the confusion matrix
        for images, batch_labels in eval_batches(source, size, 64, args.crop_fraction):
            labels.append(np.asarray(batch_labels))
            yield images, batch_labels

    report, scores = evaluate_tflite(args.model, batches(), reference_model=reference, num_threads=args.threads)
    report = {"model": args.model, "dataset": str(args.dataset), **report}
    _print_report(report, args.json)
    if report["saturated_outputs"] > 0.01:
        print(f"warning: {report['saturated_outputs']:.1%} of outputs hit the integer limit: the output scale is too "
              "small for the logits (calibrate on more representative data)", file=sys.stderr)
    if args.confusion_matrix:
        plot_confusion_matrix(np.concatenate(labels), np.argmax(scores, 1), args.confusion_matrix, os.path.basename(args.model))
        print(f"wrote {args.confusion_matrix}", file=sys.stderr if args.json else sys.stdout)


def _edgetpu_check(args):
    import json

    from keras_mixer.export.edgetpu import check_edgetpu, format_report, run_compiler

    rows, summary = check_edgetpu(args.model)
    print(json.dumps(summary, indent=2) if args.json else format_report(rows, summary))
    compiled = run_compiler(args.model)
    if compiled is None:
        print("edgetpu_compiler is not on PATH: this report applies the compiler's documented rules (see export/README.md)")
    else:
        print(compiled["log"])
        print(f"edgetpu_compiler: {compiled['counts']}")


def _export(args):
    from keras_mixer.datasets import DIGITS, calibration_images
    from keras_mixer.errors import ExportError
    from keras_mixer.export import read_labels, to_tflite
    from keras_mixer.weights import load_keras_model, read_model_info

    info = read_model_info(args.model)
    model = load_keras_model(args.model)
    calibration = None
    if args.quantization in ("int8", "uint8"):  # full-integer conversion always calibrates (QAT models too)
        source = args.calibration or (DIGITS if info.get("dataset") == DIGITS else None)
        if source is None:
            raise ExportError(f"--quantization {args.quantization} needs calibration images: pass --calibration SRC "
                              "(the model's training data: an image folder, a tfds name or digits)")
        print(f"reading {args.calibration_samples} calibration images from {source}")
        calibration = calibration_images(source, model.input_shape[1], args.calibration_samples,
                                         info.get("crop_fraction"), args.data_dir, args.download)
    labels = read_labels(args.labels, classes=model.output_shape[-1]) if args.labels else info.get("class_names")
    path = to_tflite(model, args.output, args.quantization, representative_data=calibration,
                     batch_size=args.batch_size, float_io=args.float_io, labels=labels,
                     integer_only=args.integer_only or None)
    print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KB, {args.quantization}, batch {args.batch_size}"
          f"{', ' + str(len(labels)) + ' labels' if labels else ''})")


def _predict(args):
    import json

    from keras_mixer.inference import classify

    results = classify(args.model, args.images, top=args.top, weights=args.weights, crop_fraction=args.crop_fraction)
    for result in results:
        if "error" in result:
            print(f"keras-mixer predict: error: {result['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps([result for result in results if "error" not in result]))
    else:
        for result in results:
            if "top" in result:
                best = ", ".join(f"{entry['label']} {entry['score']:.1%}" for entry in result["top"])
                print(f"{result['image']}: {best}")
    return 1 if any("error" in result for result in results) else 0


def _qat(args):
    from keras_mixer.training import quantization_aware_training

    overrides = {field: getattr(args, field) for field, _ in RECIPE_OPTIONS if hasattr(args, field)}
    _, report = quantization_aware_training(
        args.model, dataset=args.dataset, output_dir=args.output, calibration_samples=args.calibration_samples,
        data_dir=args.data_dir, download=args.download, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, seed=args.seed, **overrides,
    )
    print(f"\nfloat eval top-1 {report['float_eval_top1']:.2%}, QAT eval top-1 {report['eval_top1']:.2%} "
          f"({report['steps']} steps); wrote {args.output}/model_qat.keras")


def _train(args):
    from keras_mixer.training import connect_hosts, train

    if args.coordinator:
        connect_hosts(args.coordinator, args.num_hosts, args.host_index)
    overrides = {field: getattr(args, field) for field, _ in RECIPE_OPTIONS}
    if args.randaugment:
        overrides["randaugment"] = tuple(args.randaugment)
    _, report = train(
        model=args.model, dataset=args.dataset, output_dir=args.output, recipe=args.recipe, weights=args.weights,
        image_size=args.image_size, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every, strategy=args.strategy, precision=args.precision, tpu=args.tpu,
        data_dir=args.data_dir, download=args.download, seed=args.seed, deterministic=args.deterministic,
        scale_learning_rate=not args.no_lr_scaling, **overrides,
    )
    if "eval_top1" in report:
        print(f"\n{report['model']}: {report['steps']} steps, eval top-1 {report['eval_top1']:.2%}, "
              f"top-5 {report['eval_top5']:.2%}; wrote {args.output}/")


def _evaluate(args):
    from keras_mixer.training import evaluate

    report = evaluate(args.model, args.dataset, image_size=args.image_size, batch_size=args.batch_size,
                      data_dir=args.data_dir, download=args.download)
    if args.json:
        _print_report({"model": report["model"], "dataset": str(report["dataset"]), "examples": report["examples"],
                       "top1": report["eval_top1"], "top5": report["eval_top5"]}, True)
        return
    print(f"{report['model']} on {report['dataset']} ({report['examples']} images): "
          f"top-1 {report['eval_top1']:.2%}, top-5 {report['eval_top5']:.2%}")


def _benchmark(args):
    from keras_mixer.benchmark import markdown_table, run_benchmark

    result = run_benchmark(args.models, args.runtimes, args.batch_sizes, args.threads, args.runs, args.output)
    if result["rows"]:
        print(markdown_table(result["rows"]))
    print(f"wrote {args.output}/results.json, results.csv, table.md, latency.png ({len(result['rows'])} "
          f"measurements, {len(result['failures'])} runtimes failed)")


# recipe fields `keras-mixer train` can override, as --learning-rate etc.
RECIPE_OPTIONS = (("learning_rate", float), ("weight_decay", float), ("warmup_steps", int), ("label_smoothing", float),
                  ("mixup_alpha", float), ("cutmix_alpha", float), ("drop_path_rate", float), ("dropout_rate", float))


DATASET_HELP = ("digits (offline), an image folder (one sub-folder per class, optionally inside train/ and val/) "
                "or a tfds name (cifar10, imagenette, imagenet2012, ...)")


def _add_dataset_arguments(parser, image_size=True, flag="--dataset", default="digits"):
    parser.add_argument(flag, default=default, help=DATASET_HELP + (f" (default: {default})" if default else ""))
    parser.add_argument("--data-dir", help="tfds data directory (default: ~/tensorflow_datasets)")
    parser.add_argument("--download", action="store_true", help="let tfds download and prepare the dataset")
    if image_size:
        parser.add_argument("--image-size", type=int, help="input size (default: 32 for digits, else 224)")


def build_parser():
    parser = argparse.ArgumentParser(prog="keras-mixer", description="MLP-Mixer models for Keras 3.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="offline digits demo: train -> QAT -> int8 .tflite -> evaluate -> report"
    )
    demo.add_argument("--output", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=int, default=30, help="float training epochs (default: 30)")
    demo.add_argument("--qat-epochs", type=int, default=5, help="quantization-aware fine-tuning epochs (default: 5)")
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)

    convert = commands.add_parser(
        "convert", help="convert an official .npz or timm .pth/.safetensors Mixer checkpoint to .keras/.weights.h5"
    )
    convert.add_argument("input", help="checkpoint file (.npz, .pth, .bin, .safetensors)")
    convert.add_argument("output", help="output file (.keras or .weights.h5)")
    convert.add_argument(
        "--gelu", choices=["tanh", "exact"], help="GELU form (default: tanh for official .npz, exact for timm files)"
    )
    convert.set_defaults(run=_convert)

    evaluate = commands.add_parser("evaluate-tflite", help="top-1/top-5, agreement and latency of a .tflite model")
    evaluate.add_argument("model", help=".tflite file")
    _add_dataset_arguments(evaluate, image_size=False)
    evaluate.add_argument("--crop-fraction", type=float,
                          help="evaluation crop (default: the dataset's: 1.0 for folders and digits, 0.875 for tfds)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (top1, top5, examples, ...)")
    evaluate.add_argument("--reference", help="Keras model (.keras) to measure argmax agreement with")
    evaluate.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    evaluate.add_argument("--confusion-matrix", help="write a confusion-matrix PNG here")
    evaluate.set_defaults(run=_evaluate_tflite)

    export = commands.add_parser("export", help="export a .keras model to .tflite (with metadata and labels)")
    export.add_argument("model", help=".keras model (float or QAT)")
    export.add_argument("output", help=".tflite file to write")
    export.add_argument("--quantization", choices=["float32", "float16", "dynamic", "int8", "uint8"], default="int8")
    export.add_argument("--calibration", metavar="SRC",
                        help="int8/uint8: calibration images from SRC's training split, preprocessed as for "
                             "evaluation (" + DATASET_HELP + ")")
    export.add_argument("--calibration-samples", type=int, default=256, help="calibration images (default: 256)")
    export.add_argument("--data-dir", help="tfds data directory for --calibration")
    export.add_argument("--download", action="store_true", help="let tfds download --calibration's dataset")
    export.add_argument("--labels", help="text file with one class name per line, embedded in the metadata "
                                         "(default: the class names recorded by `keras-mixer train`)")
    export.add_argument("--batch-size", type=int, default=1)
    export.add_argument("--float-io", action="store_true", help="int8/uint8 inside, float32 input and output")
    export.add_argument("--integer-only", action="store_true",
                        help="quantize every op (Edge TPU, NNAPI); default int8 keeps the elementwise ops, LayerNorm "
                             "statistics and GELU float32, which LiteRT's CPU delegate runs faster")
    export.set_defaults(run=_export)

    train = commands.add_parser("train", help="train or fine-tune with a recipe; resumes an interrupted run")
    train.add_argument("--model", help="registry name (see keras_mixer.list_models()) or a .keras file "
                                       "(default on digits: the demo's small Mixer)")
    train.add_argument("--weights", help="pretrained tag (imagenet, ...) or checkpoint file for --model")
    _add_dataset_arguments(train)
    train.add_argument("--recipe", help="finetune | scratch | digits (default: digits on digits, finetune with "
                                        "--weights, else scratch)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="passes over the training split (default 1)")
    length.add_argument("--steps", type=int, help="optimizer steps")
    train.add_argument("--batch-size", type=int, help="global batch (default: the recipe's)")
    train.add_argument("--checkpoint-every", type=int, help="steps between backups (default: one pass)")
    train.add_argument("--strategy", default="auto",
                       help="auto | default | mirrored | multi_worker | tpu (TensorFlow); data_parallel | "
                            "model_parallel (JAX)")
    train.add_argument("--tpu", help="TPU name or address for --strategy tpu (default: the local TPU VM)")
    train.add_argument("--coordinator", help="several hosts (JAX): address:port of host 0, given to every host")
    train.add_argument("--num-hosts", type=int, default=1, help="with --coordinator: how many hosts")
    train.add_argument("--host-index", type=int, default=0, help="with --coordinator: this host's index")
    train.add_argument("--precision", default="float32", help="float32 | mixed_float16 | mixed_bfloat16 | auto")
    train.add_argument("--output", default="runs/train", help="run folder (default: runs/train)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--deterministic", action="store_true", help="reproducible input pipeline")
    train.add_argument("--no-lr-scaling", action="store_true",
                       help="keep the recipe's learning rate whatever the batch size")
    for field, kind in RECIPE_OPTIONS:
        train.add_argument(f"--{field.replace('_', '-')}", type=kind, help="override the recipe's value")
    train.add_argument("--randaugment", type=int, nargs=2, metavar=("NUM_OPS", "MAGNITUDE"))
    train.set_defaults(run=_train)

    evaluate_keras = commands.add_parser("evaluate", help="top-1/top-5 of a .keras model on a dataset's eval split")
    evaluate_keras.add_argument("model", help=".keras file")
    _add_dataset_arguments(evaluate_keras)
    evaluate_keras.add_argument("--batch-size", type=int, default=256)
    evaluate_keras.add_argument("--json", action="store_true", help="print one JSON object (top1, top5, examples)")
    evaluate_keras.set_defaults(run=_evaluate)

    qat = commands.add_parser("qat", help="quantization-aware fine-tuning of a trained .keras model on your data "
                                          "(resumes an interrupted run)")
    qat.add_argument("model", help="trained float model (.keras)")
    _add_dataset_arguments(qat, image_size=False)
    qat_length = qat.add_mutually_exclusive_group()
    qat_length.add_argument("--epochs", type=int, help="passes over the training split (default 1)")
    qat_length.add_argument("--steps", type=int, help="optimizer steps")
    qat.add_argument("--batch-size", type=int, help="global batch (default: 64)")
    qat.add_argument("--calibration-samples", type=int, default=256,
                     help="training images that set the initial int8 ranges (default: 256)")
    qat.add_argument("--checkpoint-every", type=int, help="steps between backups (default: one pass)")
    qat.add_argument("--learning-rate", type=float, help="peak learning rate (default: 1e-4 at batch 64)")
    qat.add_argument("--output", default="runs/qat", help="run folder (default: runs/qat)")
    qat.add_argument("--seed", type=int, default=0)
    qat.set_defaults(run=_qat)

    predict = commands.add_parser("predict", help="classify image files with a .keras, .tflite or pretrained model")
    predict.add_argument("model", help=".keras file, .tflite file, or a registry name with --weights")
    predict.add_argument("images", nargs="+", help="image files (any format and size PIL reads)")
    predict.add_argument("--weights", help="with a registry name: pretrained tag (imagenet, ...) or checkpoint file")
    predict.add_argument("--top", type=int, default=5, help="classes per image (default: 5)")
    predict.add_argument("--crop-fraction", type=float, help="override the model's evaluation crop")
    predict.add_argument("--json", action="store_true",
                         help='print [{"image": path, "top": [{"label", "index", "score"}, ...]}, ...]')
    predict.set_defaults(run=_predict)

    bench = commands.add_parser("benchmark", help="latency of the same weights in TFLite, Keras, timm and ONNX "
                                                  "Runtime, side by side (results.json/.csv, latency.png)")
    from keras_mixer.benchmark import RUNTIMES

    bench.add_argument("--models", nargs="+", default=["mixer_s32"], help="Mixer variants (default: mixer_s32)")
    bench.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    bench.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    bench.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    bench.add_argument("--runs", type=int, default=50, help="timed runs per measurement, after 5 warm-up runs")
    bench.add_argument("--output", default="runs/benchmark")
    bench.set_defaults(run=_benchmark)

    edgetpu = commands.add_parser("edgetpu-check", help="which ops of a .tflite the Coral Edge TPU would map")
    edgetpu.add_argument("model", help=".tflite file")
    edgetpu.add_argument("--json", action="store_true", help="print the summary as JSON")
    edgetpu.set_defaults(run=_edgetpu_check)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info logs drown the command's output
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except KerasMixerError as error:
        print(f"keras-mixer {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
