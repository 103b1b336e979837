"""The `keras-mixer` commands. The parser lives in `keras_mixer_cli`, which answers `--help` without importing
TensorFlow; it calls `run` here with the parsed arguments (`args.command` names the command, `args.recipe_overrides`
holds the recipe fields given as flags)."""

import difflib
import os
import re
import resource
import shlex
import sys
import time
import warnings
from pathlib import Path

from keras_mixer.errors import KerasMixerError


def _demo(args):
    from keras_mixer.demo import run_demo

    # A live progress bar on a terminal; one line per epoch in logs (CI), where a redrawn bar is noise.
    verbose = 1 if sys.stdout.isatty() else 2
    run_demo(args.output, epochs=args.epochs, qat_epochs=args.qat_epochs, batch_size=args.batch_size, seed=args.seed,
             verbose=verbose)


def _convert(args):
    from keras_mixer.models.mlp_mixer import convert_checkpoint

    if (args.mean is None) != (args.std is None):
        raise KerasMixerError("--mean and --std: give both (the normalization the checkpoint was trained on), or "
                              "neither")
    normalization = (tuple(args.mean), tuple(args.std)) if args.mean else None
    model = convert_checkpoint(args.input, args.output, gelu=args.gelu, checkpoint_normalization=normalization)
    print(f"\nwrote {args.output}: {model.name}, {model.count_params():,} params, input {model.input_shape[1:]}")


def _models(args):
    """The registry's variants that match the patterns, one line per release (timm's list_models and pretrained
    configs on one screen)."""
    from keras_mixer.models import list_models, list_pretrained
    from keras_mixer.weights.pretrained import resolve

    names = list_models(args.patterns, pretrained=args.pretrained)
    if not names:
        literal = next((pattern for pattern in args.patterns if not set(pattern) & set("*?[")), None)
        hint = f" (a name without wildcards matches itself only: try '*{literal}*')" if literal else ""
        raise KerasMixerError(f"no model{' with a release' if args.pretrained else ''} matches "
                              f"{' '.join(args.patterns)}{hint}; keras-mixer models lists all {len(list_models())}")
    rows = [("model", "--weights", "classes", "top-1")]
    for name in names:
        released = list_pretrained(name)
        default = resolve(name, "imagenet").tag if "imagenet" in released else None
        tags = [tag for tag in released if tag != "imagenet"]
        for index, tag in enumerate(tags or [None]):
            release = resolve(name, tag) if tag else None
            shown = "-" if release is None else f"{tag} (imagenet)" if tag == default else tag
            top1 = f"{release.top1:.1f} %" if release is not None and release.top1 else ""
            rows.append((name if index == 0 else "", shown, f"{release.classes:,}" if release else "", top1))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                        for column, (cell, width) in enumerate(zip(row, widths))).rstrip())
    print(f"\n{len(names)} model{'s' if len(names) > 1 else ''}. A release: keras-mixer predict NAME --weights TAG "
          "IMAGE (train, evaluate and export take it too).\n'-': no release here; --weights takes a checkpoint file "
          "(the authors' or your own). Sizes and GMACs: docs/models.md")


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

    from keras_mixer.export import evaluate_tflite, load_interpreter, plot_confusion_matrix
    from keras_mixer.export.evaluate import check_png_path, check_reference_model, dataset_eval_batches

    if args.confusion_matrix:
        check_png_path(args.confusion_matrix)  # before the evaluation, not after it
    interpreter = load_interpreter(args.model)
    source, dataset_batches = dataset_eval_batches(args.model, interpreter, args.dataset, args.data_dir, args.download,
                                                   args.crop_fraction)
    reference = None
    if args.reference:
        from keras_mixer.weights import load_keras_model

        reference = load_keras_model(args.reference)
        check_reference_model(reference, interpreter, f"--reference {args.reference}", args.model)
    labels = []

    def batches():  # keeps the labels for the confusion matrix
        for images, batch_labels in dataset_batches:
            labels.append(np.asarray(batch_labels))
            yield images, batch_labels

    report, scores = evaluate_tflite(args.model, batches(), reference_model=reference, num_threads=args.threads)
    report = {"model": args.model, "dataset": str(args.dataset), **report}
    _print_report(report, args.json)
    _say_undecodable(args.command, report["examples"], source.num_examples)
    if report["saturated_outputs"] > 0.01:
        print(f"warning: {report['saturated_outputs']:.1%} of outputs hit the integer limit: the output scale is too "
              "small for the logits (calibrate on more representative data)", file=sys.stderr)
    if args.confusion_matrix:
        plot_confusion_matrix(np.concatenate(labels), np.argmax(scores, 1), args.confusion_matrix,
                              os.path.basename(args.model))
        print(f"wrote {args.confusion_matrix}", file=sys.stderr if args.json else sys.stdout)


def _edgetpu_check(args):
    import json

    from keras_mixer.export.edgetpu import check_edgetpu, format_report, run_compiler

    rows, summary = check_edgetpu(args.model)
    print(json.dumps(summary, indent=2) if args.json else format_report(rows, summary))
    compiled = run_compiler(args.model)
    if compiled is None:
        print("edgetpu_compiler is not on PATH: this report applies the compiler's documented rules (the compiler: "
              "https://coral.ai/docs/edgetpu/compiler/)")
    else:
        print(compiled["log"])
        print(f"edgetpu_compiler: {compiled['counts']}")


def _export(args):
    from keras_mixer.datasets import DIGITS, calibration_images, model_image_size
    from keras_mixer.errors import ExportError
    from keras_mixer.export import export_plan, read_labels, to_tflite
    from keras_mixer.export.plan import ExportOptions
    from keras_mixer.inference import release_model_and_info
    from keras_mixer.models.registry import names_a_file, refuse_weights_beside
    from keras_mixer.weights import load_keras_model_with_info

    from keras_mixer.export.tflite import check_output_paths, require_tensorflow_backend

    require_tensorflow_backend()
    check_output_paths(args.output, args.report)
    float_layers = args.float_layers
    if float_layers and len(float_layers) == 1 and float_layers[0].isdigit():
        float_layers = int(float_layers[0])  # the N worst ops of the report
    elif float_layers and any(pattern.isdigit() for pattern in float_layers):
        # as a pattern, "3" keeps float every op whose name holds a 3 (MixerBlock_3, Dense_3, ...)
        raise ExportError(f"--float-layers {' '.join(float_layers)}: give a number (the N worst ops) or patterns, not "
                          "both; a pattern of digits alone matches every op name holding them")
    int8_flags = [flag for flag, given in (
        ("--calibration", args.calibration), ("--calibration-samples", args.calibration_samples),
        ("--calibration-method", args.calibration_method), ("--no-equalize", args.no_equalize),
        ("--integer-only", args.integer_only), ("--report", args.report), ("--float-layers", args.float_layers))
        if given]
    if int8_flags and args.quantization not in ("int8", "uint8"):  # they would change nothing, without a word
        raise ExportError(f"{', '.join(int8_flags)}: for int8/uint8 exports; --quantization {args.quantization} "
                          "keeps float activations, with no ranges to calibrate")
    output = Path(args.output)
    if output.exists() and Path(args.model).exists() and output.resolve() == Path(args.model).resolve():
        raise ExportError(f"{args.output} is the model being exported: export never writes over its own input")
    if not names_a_file(args.model):  # a release, as predict and evaluate take it
        model, info = release_model_and_info(args.model, args.weights)
    else:
        refuse_weights_beside(args.model, args.weights, ExportError, "--weights")
        model, info = load_keras_model_with_info(args.model)
    if args.edgetpu:
        from keras_mixer.export.edgetpu_model import edgetpu_model

        if args.quantization not in ("int8", "uint8") or args.batch_size != 1:
            raise ExportError(f"--edgetpu exports int8 or uint8 at batch 1 (the Edge TPU's), not --quantization "
                              f"{args.quantization} --batch-size {args.batch_size}")
        model = edgetpu_model(model, experts_on_cpu=args.experts_on_cpu)
    elif args.experts_on_cpu:
        raise ExportError("--experts-on-cpu applies to --edgetpu exports")
    calibration = None
    if args.quantization in ("int8", "uint8"):  # full-integer conversion always calibrates (QAT models too)
        source = args.calibration or (DIGITS if info.get("dataset") == DIGITS else None)
        if source is None:
            raise ExportError(f"--quantization {args.quantization} needs calibration images: pass --calibration SRC "
                              "(the model's training data: an image folder, a tfds name or digits)")
        image_size = model_image_size(model)
        samples = args.calibration_samples or ExportOptions.calibration_samples
        print(f"reading {samples} calibration images from {source}")
        calibration = calibration_images(source, image_size, samples,
                                         info.get("crop_fraction"), args.data_dir, args.download)
    if calibration is not None and info.get("ptq_eval_top1", -1.0) > info.get("eval_top1", 1.0):
        print(f"note: the QAT run that wrote {args.model} measured its float model's post-training int8 export "
              f"better on validation ({info['ptq_eval_top1']:.2%} vs this model's {info['eval_top1']:.2%}): "
              "exporting the float model may give the better int8 file", file=sys.stderr)
    labels = read_labels(args.labels, classes=model.output_shape[-1]) if args.labels else info.get("class_names")
    options = dict(batch_size=args.batch_size, float_io=args.float_io, integer_only=args.integer_only or None,
                   equalize=not args.no_equalize, float_layers=float_layers,
                   calibration_method=args.calibration_method or ExportOptions.calibration_method, route=args.route)
    if args.verbose:
        plan = export_plan(model, quantization=args.quantization, calibrated=calibration is not None,
                           report=args.report is not None, **options)
        print("export plan:\n  " + "\n  ".join(plan.lines()))
    started = time.perf_counter()
    path = to_tflite(model, args.output, args.quantization, representative_data=calibration, labels=labels,
                     report=args.report, **options)
    # the process's peak resident memory (Linux reports KiB): what a machine needs to run this export
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {path} ({os.path.getsize(path) / 1024:.0f} KB, {args.quantization}, batch {args.batch_size}"
          f"{', ' + str(len(labels)) + ' labels' if labels else ''}) in {time.perf_counter() - started:.0f} s, "
          f"peak memory {peak:,.0f} MB")


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
    # as for any bad input, exit 2 when no image could be classified; 1 when some were and the others are named
    failed = sum("error" in result for result in results)
    return 2 if failed == len(results) else 1 if failed else 0


def _qat(args):
    from keras_mixer.training import quantization_aware_training

    _, report = quantization_aware_training(
        args.model, dataset=args.dataset, output_dir=args.output, calibration_samples=args.calibration_samples,
        data_dir=args.data_dir, download=args.download, epochs=args.epochs, steps=args.steps,
        batch_size=args.batch_size, checkpoint_every=args.checkpoint_every, seed=args.seed, overwrite=args.overwrite,
        precision=args.precision, **args.recipe_overrides,
    )
    print(f"\neval top-1: float {report['float_eval_top1']:.2%}, post-training int8 {report['ptq_eval_top1']:.2%}, "
          f"QAT {report['eval_top1']:.2%} (kept the weights of step {report.get('kept_step', report['steps'])} of "
          f"{report['steps']}); wrote {args.output}/model_qat.keras")
    if report["eval_top1"] < report["ptq_eval_top1"]:
        print(f"warning: QAT ended below the float model's post-training int8 export ({report['eval_top1']:.2%} < "
              f"{report['ptq_eval_top1']:.2%}): export {args.model} with --quantization int8 instead, or fine-tune "
              "longer or at a lower learning rate", file=sys.stderr)


def _train(args):
    from keras_mixer.training import connect_hosts, train

    if args.coordinator:
        connect_hosts(args.coordinator, args.num_hosts, args.host_index)
    _, report = train(
        model=args.model, dataset=args.dataset, output_dir=args.output, recipe=args.recipe, weights=args.weights,
        image_size=args.image_size, epochs=args.epochs, steps=args.steps, batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every, strategy=args.strategy, precision=args.precision, tpu=args.tpu,
        data_dir=args.data_dir, download=args.download, seed=args.seed, deterministic=args.deterministic,
        scale_learning_rate=not args.no_lr_scaling, overwrite=args.overwrite, **args.recipe_overrides,
    )
    if "eval_top1" in report:
        print(f"\n{report['model']}: {report['steps']} steps, eval top-1 {report['eval_top1']:.2%}, "
              f"top-5 {report['eval_top5']:.2%}; wrote {args.output}/")


def _evaluate(args):
    from keras_mixer.training import evaluate

    report = evaluate(args.model, args.dataset, image_size=args.image_size, batch_size=args.batch_size,
                      data_dir=args.data_dir, download=args.download, weights=args.weights,
                      crop_fraction=args.crop_fraction)
    _say_undecodable(args.command, report["examples"], report["files"])
    if args.json:
        _print_report({"model": report["model"], "dataset": str(report["dataset"]), "examples": report["examples"],
                       "top1": report["eval_top1"], "top5": report["eval_top5"]}, True)
        return
    print(f"{report['model']} on {report['dataset']} ({report['examples']} images): "
          f"top-1 {report['eval_top1']:.2%}, top-5 {report['eval_top5']:.2%}")


def _benchmark(args):
    from keras_mixer.benchmark import RUNTIMES, markdown_table, run_benchmark

    from keras_mixer.models import list_models

    for flag, names in (("--runtimes", args.runtimes or []), ("--models", args.models)):
        if any("," in name for name in names):  # one name "a,b" would be refused as unknown
            raise KerasMixerError(f"{flag} {' '.join(names)}: separate the names with spaces "
                                  f"({flag} {' '.join(part for name in names for part in name.split(',') if part)})")
    runtimes = args.runtimes or list(RUNTIMES)
    unknown = sorted(set(runtimes) - set(RUNTIMES))
    if unknown:
        raise KerasMixerError(f"unknown runtimes {unknown}; known: {', '.join(RUNTIMES)}")
    mixers = ["mixer_tiny"] + [name for name in list_models() if name.startswith("mixer_")]
    for name in args.models:  # timm and litert-torch run the same weights: Mixers only
        if name not in mixers:
            near = difflib.get_close_matches(name, mixers, n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise KerasMixerError(f"--models {name}: not a Mixer variant{hint} (known: {', '.join(mixers)})")
    result = run_benchmark(args.models, runtimes, args.batch_sizes, args.threads, args.runs, args.output,
                           command=shlex.join(["keras-mixer", *sys.argv[1:]]))
    written = "results.json, results.csv" + (", table.md, latency.png" if result["rows"] else "")
    if result["rows"]:
        print(markdown_table(result["rows"]))
    print(f"wrote {args.output}/: {written} ({len(result['rows'])} measurements, {len(result['failures'])} runtimes "
          "failed)")
    return 0 if result["rows"] else 1


def _say_undecodable(command, used, files):
    """One line on stderr when fewer images were evaluated than the split has files (damaged past their header)."""
    if used < files:
        print(f"keras-mixer {command}: {files - used} of {files} image files failed to decode and were left out; "
              f"the figures are over the {used} others", file=sys.stderr)


def _say_skipped_images(command):
    """One line on stderr naming the image files the command left out as unreadable (keras_mixer.datasets)."""
    skipped = getattr(sys.modules.get("keras_mixer.datasets"), "SKIPPED_IMAGES", None)
    if skipped:
        shown = "; ".join(f"{path} ({why})" for path, why in list(skipped.items())[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        print(f"keras-mixer {command}: skipped {len(skipped)} unreadable image files: {shown}{more}", file=sys.stderr)


def _one_line_warnings(command, show_others):
    """keras_mixer's own warnings (a checkpoint's head left out, a release without a published hash) as one line
    naming the command, where Python's show the source file and the line of code that warned."""
    package = os.path.dirname(os.path.abspath(__file__))

    def show(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(package + os.sep):
            print(f"keras-mixer {command}: warning: {message}", file=sys.stderr)
        else:
            show_others(message, category, filename, lineno, file, line)

    return show


# the backends' out-of-memory errors, by class name: TensorFlow's ResourceExhaustedError, torch's OutOfMemoryError (on a
# GPU; on a CPU a RuntimeError from its DefaultCPUAllocator); JAX's is a JaxRuntimeError whose message starts
# RESOURCE_EXHAUSTED. Named, not imported: a command imports only its own backend
OUT_OF_MEMORY_ERRORS = ("ResourceExhaustedError", "OutOfMemoryError")
OUT_OF_MEMORY_MESSAGE = re.compile(r"^RESOURCE_EXHAUSTED|DefaultCPUAllocator: can't allocate memory")
# the line of a backend's message that says what did not fit
OUT_OF_MEMORY_LINE = re.compile(r"OOM when allocating tensor with shape\[[\d,]*\][^\n]*?(?= by allocator|$)|"
                                r"(CUDA )?[Oo]ut of memory[^\n]*|can't allocate memory: [^\n]*? bytes", re.M)


def _out_of_memory(error):
    """What ran out of memory, in one line, when `error` is a backend's out-of-memory error or Python's
    MemoryError; None for any other error."""
    if isinstance(error, MemoryError):
        return f"the host's memory ({str(error) or 'an allocation failed'})"
    message = str(error)
    if type(error).__name__ not in OUT_OF_MEMORY_ERRORS and not OUT_OF_MEMORY_MESSAGE.search(message):
        return None
    found = OUT_OF_MEMORY_LINE.search(message)
    return (found.group(0) if found else message.strip().splitlines()[0]).strip()[:240]


def _less_memory(args):
    """What the command's flags can do about running out of memory."""
    if args.command == "export":
        return "; --route blocks converts a piece at a time" if args.route != "blocks" else ""
    if args.command not in ("demo", "train", "qat", "evaluate"):
        return ""
    hint = f"; a smaller --batch-size (now {args.batch_size}) needs less" if args.batch_size else \
        "; a smaller --batch-size needs less"
    if args.command in ("train", "qat") and os.path.isdir(args.output):  # its run folder records this batch
        hint += f": run again with it and --overwrite ({args.output} holds this run's settings)"
    return hint


def run(args):
    """Runs the parsed command; a KerasMixerError, a file the command cannot read or write (permissions, a
    directory in the way, a full disk) or an out-of-memory error (a batch too large for the device) is one line on
    stderr naming it, and exit code 2."""
    getattr(sys.modules.get("keras_mixer.datasets"), "SKIPPED_IMAGES", {}).clear()  # this command's own
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            code = COMMANDS[args.command](args) or 0
        _say_skipped_images(args.command)
        return code
    except KerasMixerError as error:
        print(f"keras-mixer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = error.filename if error.filename is not None else "a file"
        print(f"keras-mixer {args.command}: error: {where}: {error.strerror or error}", file=sys.stderr)
        return 2
    except Exception as error:
        what = _out_of_memory(error)
        if what is None:
            raise
        print(f"keras-mixer {args.command}: error: out of memory: {what}{_less_memory(args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line saying what was kept, not a traceback
        kept = (f"; the last backup in {args.output} is kept: the same command resumes"
                if args.command in ("train", "qat") else "")
        print(f"\nkeras-mixer {args.command}: interrupted{kept}; files it was writing were left as they were",
              file=sys.stderr)
        return 130


COMMANDS = {"demo": _demo, "convert": _convert, "evaluate-tflite": _evaluate_tflite, "export": _export,
            "models": _models,
            "train": _train, "evaluate": _evaluate, "qat": _qat, "predict": _predict, "benchmark": _benchmark,
            "edgetpu-check": _edgetpu_check}
