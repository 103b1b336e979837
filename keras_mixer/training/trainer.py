"""`train` and `evaluate`: a recipe, a dataset and a strategy in, a resumable run out (model.keras, metrics CSV,
TensorBoard logs, training-curve PNG, report.json)."""

import contextlib
import json
import math
import os
import socket
import sys
import time
from pathlib import Path

import keras
import numpy as np

from keras_mixer.datasets import (check_crop_fraction, check_dataset, check_model_classes, image_shape,
                                  model_image_size)
from keras_mixer.errors import TrainingError, is_whole_number
from keras_mixer.export.evaluate import top_k_accuracy
from keras_mixer.io_utils import require_output_folder, write_text
from keras_mixer.models.registry import (list_models, names_a_file, refuse_weights_beside, registered_name,
                                         variant_name)
from keras_mixer.training.callbacks import (
    BestValidationWeights,
    InterruptBetweenSteps,
    IntervalTensorBoard,
    ResumableBackup,
    ResumableCSVLogger,
    StopOnNonFiniteLoss,
    optimizer_step,
    plot_history,
    read_history,
)
from keras_mixer.training.data import DIGITS, crop_fraction_for, load_source, make_pipeline
from keras_mixer.training.distribute import (
    choose_precision,
    get_distribution,
    multi_worker_configured,
    under_global_policy,
)
from keras_mixer.training.feed import fit_data, with_pixel_input
from keras_mixer.training.recipe import compile_model, get_recipe, make_schedule, peak_learning_rate
from keras_mixer.weights import (load_keras_model, load_keras_model_with_info, nonfinite_variables, require_model_file,
                                 save_model)


def default_recipe(dataset, weights):
    """digits -> "digits"; with pretrained weights -> the official "finetune"; otherwise "scratch"."""
    if dataset == DIGITS:
        return "digits"
    return "finetune" if weights else "scratch"


def build_model(model, classes, image_size, weights, recipe):
    """A registry name (built with the recipe's stochastic depth and dropout, logits out), a `.keras` file, a
    keras.Model used as is, or a function that returns one (called inside the distribution scope); None on digits
    is the demo's small Mixer."""
    from keras_mixer.models import create_model

    if isinstance(model, keras.Model):
        return model
    if callable(model):
        return model()
    if model is None:
        from keras_mixer.models.mlp_mixer import build_digits_mixer

        return build_digits_mixer(drop_path_rate=recipe.drop_path_rate, dropout_rate=recipe.dropout_rate)
    if names_a_file(model):
        return load_keras_model(model)
    # an unknown name or a bad argument is the registry's / the builder's KerasMixerError, named there
    return create_model(
        model, weights=weights, input_shape=(*image_shape(image_size), 3), classes=classes,
        classifier_activation=None, drop_path_rate=recipe.drop_path_rate, dropout_rate=recipe.dropout_rate,
    )


def step_callbacks(output_dir, is_chief=True, tensorboard=True, first_epoch=0):
    """What watches every step of a run: the NaN stop, and on the chief the metrics CSV (a run resumed at interval
    `first_epoch` writes that interval's row and the later ones again) and (TensorFlow writes them) TensorBoard
    logs in `output_dir`. None of them makes the host wait for a step (training/callbacks.py);
    benchmarks/train_gpu.py times the trainer's feed with them."""
    if not is_chief:
        return [StopOnNonFiniteLoss()]
    logs = [IntervalTensorBoard(str(Path(output_dir) / "tensorboard"))] if tensorboard else []
    return [StopOnNonFiniteLoss(), ResumableCSVLogger(str(Path(output_dir) / "metrics.csv"), first_epoch),
            *logs]


def train(
    model=None,
    dataset=DIGITS,
    output_dir="runs/train",
    recipe=None,
    weights=None,
    image_size=None,
    epochs=None,
    steps=None,
    batch_size=None,
    checkpoint_every=None,
    strategy="auto",
    precision="auto",
    tpu=None,
    data_dir=None,
    download=False,
    seed=0,
    deterministic=False,
    scale_learning_rate=True,
    verbose="auto",
    model_filename="model.keras",
    keep_best=False,
    model_info=None,
    overwrite=False,
    **recipe_overrides,
):
    """Trains `model` on `dataset` with `recipe`, resuming from `output_dir` if a previous run was interrupted.

    Args:
        model: registry name ("mixer_b16", ...), a `.keras` path, a keras.Model, or None (digits: the demo Mixer).
        dataset: "digits", a tfds name ("cifar10", "imagenet2012", ...) or an image folder.
        recipe: preset name ("finetune", "scratch", "digits") or Recipe; default from `default_recipe`;
            `recipe_overrides` replace single fields (e.g. learning_rate=0.01, mixup_alpha=0.2).
        epochs: run length in passes over the training split (or give `steps`).
        steps: run length in optimizer steps.
        batch_size: the global batch (split over replicas); default the recipe's, or the largest power of two
            within the training split when that is smaller. The learning rate scales linearly from the recipe's
            batch unless scale_learning_rate=False.
        checkpoint_every: steps between backups, validation and a CSV row (default: one pass over the data).
            The run is rounded up to whole intervals. A killed run restarted with the same arguments continues
            from the last backup at the same step, with the same data stream.
        strategy: see `get_distribution` (`tpu` names the TPU for strategy "tpu"). Batches are split along the
            batch axis over the strategy's replicas, for training, validation and evaluation.
        precision: "auto" (bfloat16 on GPUs with bfloat16 tensor cores and on TPUs, float16 on older GPUs, float32
            on CPUs), "float32", "mixed_bfloat16" or "mixed_float16": see `choose_precision`. The run prints what
            it chose and why, and report.json records it.
        deterministic: reproducible data order and augmentation (slower input pipeline).
        keep_best: end with the weights of the interval with the best validation top-1, the starting weights
            included (`BestValidationWeights`), rather than the last interval's.
        model_info: more `keras_mixer.weights.save_model` info to record in the model file.
        overwrite: start afresh in an `output_dir` that holds a finished run or another run (its backups are
            removed; its files are replaced when this run ends). Without it such a folder is refused: a run folder
            belongs to one run (recorded in run.json: model, dataset and class names, image size, recipe, batch,
            seed), and only an interrupted run with the same definition is resumed.
    Writes `output_dir/model_filename` with the dataset's class names and evaluation crop recorded in it
    (`keras_mixer.weights.read_model_info`), metrics.csv, TensorBoard logs, training_curves.png, report.json.
    Returns (model, report dict).
    """
    output_dir = Path(output_dir)
    check_run_length(epochs, steps, batch_size, checkpoint_every)
    check_model_arguments(model, weights, image_size)
    check_dataset(dataset)  # before `dataset == DIGITS`, which an array would answer elementwise
    check_run_folder(output_dir, model_filename, overwrite)
    if not (is_whole_number(seed) and seed >= 0):  # Keras' refusal of a string came from set_random_seed
        raise TrainingError(f"seed must be a whole number >= 0, got {seed!r}")
    if isinstance(dataset, (str, Path)) and Path(dataset).is_dir() and (
            Path(dataset).resolve() in (output_dir.resolve(), *output_dir.resolve().parents)):
        raise TrainingError(f"--output {output_dir} is inside the dataset folder {dataset}: the run's files (its "
                            "training-curve PNG among them) would be read as data next time; choose a folder "
                            "outside it")
    recipe = get_recipe(recipe or default_recipe(dataset, weights), **recipe_overrides)
    keras.utils.set_random_seed(seed)
    if strategy == "multi_worker" or (strategy == "auto" and multi_worker_configured()):
        # Measured with Keras 3.15 / TF 2.21: fit fails in _maybe_symbolic_build and then in the metric reduction
        # under this strategy (keras-team/keras#20585, open). Say so instead of failing deep inside fit.
        raise TrainingError("Keras 3 model.fit does not run under MultiWorkerMirroredStrategy yet "
                            "(keras-team/keras#20585); on several machines use the JAX backend "
                            "(KERAS_BACKEND=jax, --strategy data_parallel --coordinator HOST0:PORT --num-hosts N "
                            "--host-index I), or one machine with "
                            "--strategy mirrored")
    distribution = get_distribution(strategy, tpu)
    policy, why = choose_precision(precision, distribution)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    folder_lock = contextlib.ExitStack()
    try:
        if distribution.is_chief:
            print(f"precision {policy} ({why}); strategy {distribution.name} over {distribution.num_replicas} "
                  f"replica(s)", flush=True)
        requested_size, image_size = image_size, image_size or (32 if dataset == DIGITS else 224)
        train_source = load_source(dataset, "train", data_dir, download, image_size)
        eval_source = load_source(dataset, "eval", data_dir, download, image_size)
        if batch_size is None:
            batch_size = recipe.batch_size
            if batch_size > train_source.num_examples:  # a small folder: no batch repeats an image many times over
                batch_size = 2 ** int(math.log2(max(train_source.num_examples, 1)))
                print(f"batch {batch_size}: the recipe's {recipe.batch_size} is more than the "
                      f"{train_source.num_examples} "
                      "training images (the learning rate scales with it)")
        elif batch_size > train_source.num_examples and distribution.is_chief:
            print(f"note: batch {batch_size} is more than the {train_source.num_examples} training images: every "
                  "batch repeats images, and one step is more than a pass over the data", flush=True)
        if batch_size % distribution.num_replicas:
            raise TrainingError(f"global batch {batch_size} does not split over {distribution.num_replicas} replicas")
        steps_per_pass = max(train_source.num_examples // batch_size, 1)
        if steps is None:
            steps = (epochs or 1) * steps_per_pass
        interval = checkpoint_every or min(steps_per_pass, steps)  # a run shorter than one pass is one interval
        intervals = math.ceil(steps / interval)
        total_steps = intervals * interval

        # Everything that builds, restores, trains or evaluates runs inside the scope: a keras.distribution applies to
        # fit only while it is the current one, so a fit outside it trains on whole, unsplit batches.
        with distribution.scope():
            demo_model = model is None  # the digits demo's Mixer, 10 classes
            model = under_global_policy(build_model(model, train_source.num_classes, image_size, weights, recipe))
            model_size = model_image_size(model)
            if model_size is not None and image_shape(model_size) != image_shape(image_size):
                if requested_size:
                    raise TrainingError(f"--image-size {requested_size} does not match the model's input size "
                                        f"{model_size}")
                image_size = model_size  # a .keras model or a keras.Model brings its own input size
            if model.output_shape[-1] != train_source.num_classes:
                hint = "; without a model train builds the digits demo's Mixer: name one" if demo_model else ""
                raise TrainingError(f"model has {model.output_shape[-1]} outputs but {dataset!r} has "
                                    f"{train_source.num_classes} classes{hint}")
            # trains on uint8 pixels scaled on the device; `model` itself (saved below) keeps its [-1, 1] input
            trainee = with_pixel_input(model)
            compile_model(trainee, recipe, total_steps, batch_size, scale_learning_rate)
            # the schedule the optimizer follows: the recipe's rate scaled to this batch, its warmup shortened to half
            # a short run (the recipe in report.json keeps the values asked for)
            schedule = {"decay": recipe.decay, **make_schedule(
                recipe, total_steps, peak_learning_rate(recipe, batch_size, scale_learning_rate)).get_config()}
            if distribution.is_chief:
                print(f"learning rate {schedule['peak']:.3g} at batch {batch_size} (the recipe's "
                      f"{recipe.learning_rate:g} at {recipe.batch_size}{'' if scale_learning_rate else ', unscaled'}), "
                      f"warmup {schedule['warmup_steps']} of {total_steps} steps, {recipe.decay} decay", flush=True)
            if distribution.is_chief:
                folder_lock.enter_context(run_folder_lock(output_dir))
                check_run_folder(output_dir, model_filename, overwrite)  # a run that finished while this one built
                claim_run_folder(output_dir, {
                    "model": model.name, "params": model.count_params(), "dataset": str(dataset),
                    "class_names": train_source.class_names, "image_size": image_size, "recipe": recipe.__dict__,
                    "global_batch": batch_size, "seed": seed}, overwrite)
            # workers other than the chief keep their own backup (Keras' multi-worker convention)
            backup_dir = (output_dir / "backup" if distribution.is_chief
                          else output_dir / f"backup_worker{distribution.worker_index}")
            backup = ResumableBackup(str(backup_dir), seed)
            start_step = backup.restore(trainee)

            train_data = make_pipeline(train_source, image_size, batch_size, recipe, training=True, seed=seed,
                                       deterministic=deterministic, skip_batches=start_step, pixels=True)
            eval_data = make_pipeline(eval_source, image_size, batch_size, recipe, training=False, pixels=True)
            first_interval = start_step // interval
            callbacks = [*step_callbacks(output_dir, distribution.is_chief, first_epoch=first_interval), backup]
            if verbose == "auto":
                verbose = 1 if sys.stdout.isatty() else 2  # one line per interval in logs, a live bar on a terminal
            def feed(data, repeat=False):
                return fit_data(data, distribution, batch_size, repeat)

            best = None
            if keep_best and start_step < total_steps:
                best = BestValidationWeights(evaluate_model(trainee, feed(eval_data))["eval_top1"])
                callbacks.append(best)
            started = time.perf_counter()
            if start_step < total_steps:
                with InterruptBetweenSteps() as interrupt:
                    trainee.fit(feed(train_data), epochs=intervals, steps_per_epoch=interval,
                                initial_epoch=first_interval, validation_data=feed(eval_data, repeat=True),
                                callbacks=[*callbacks, interrupt], verbose=verbose,
                                # an image folder's size is not known to tf.data
                                validation_steps=math.ceil(eval_source.num_examples / batch_size),
                                shuffle=False)  # the stream is shuffled (seeded) in make_pipeline
            seconds = time.perf_counter() - started
            if nonfinite_variables(model):
                raise TrainingError(f"training diverged (NaN/Inf loss or weights) by step {optimizer_step(trainee)}; "
                                    f"nothing was reported, the last finite backup in {output_dir / 'backup'} is kept. "
                                    "Lower the learning rate or check the data for NaN/Inf")
            evaluation = evaluate_model(trainee, feed(eval_data)) if distribution.is_chief else {}
        trained = optimizer_step(trainee) - start_step

        report = {
            "model": model.name,
            "params": model.count_params(),
            "dataset": dataset,
            "image_size": image_size,
            "class_names": train_source.class_names,
            "train_examples": train_source.num_examples,
            "eval_examples": eval_source.num_examples,
            "recipe": recipe.__dict__,
            "strategy": distribution.name,
            "replicas": distribution.num_replicas,
            "precision": policy,
            "precision_choice": why,
            "global_batch": batch_size,
            "learning_rate_schedule": schedule,
            "steps": optimizer_step(trainee),
            "resumed_from_step": start_step,
            "images_per_second": trained * batch_size / seconds if trained else None,
        }
        if best is not None:
            report["kept_step"] = best.best_step
        if distribution.is_chief:
            report.update(evaluation)
            keras.config.set_dtype_policy("float32")  # the file holds the float32 model, whatever trained it
            save_model(under_global_policy(model), output_dir / model_filename, class_names=train_source.class_names,
                       crop_fraction=crop_fraction_for(recipe, eval_source), dataset=str(dataset),
                       eval_top1=report["eval_top1"], **(model_info or {}))
            history = read_history(output_dir / "metrics.csv")
            if history:
                steps_axis = [interval * (i + 1) for i in range(len(history["loss"]))]
                plot_history(history, output_dir / "training_curves.png", x_label="step", x_values=steps_axis)
            write_text(output_dir / "report.json", json.dumps(report, indent=2, default=str))
    finally:  # the caller's later models are built under its own policy
        keras.config.set_dtype_policy(previous_policy)
        folder_lock.close()
    return model, report


RUN_FILE = "run.json"


RUN_LENGTH = ("epochs", "steps", "batch_size", "checkpoint_every")


def check_run_length(epochs=None, steps=None, batch_size=None, checkpoint_every=None):
    """TrainingError unless each count given is a whole number >= 1 and at most one of `epochs` and `steps` is given
    (the command line's flags take the same): checked before any data is read or weights are built."""
    if epochs is not None and steps is not None:
        raise TrainingError(f"give epochs or steps, not both (got epochs={epochs!r}, steps={steps!r})")
    for name, value in zip(RUN_LENGTH, (epochs, steps, batch_size, checkpoint_every)):
        if value is not None and not (is_whole_number(value) and value >= 1):
            raise TrainingError(f"{name} must be an integer >= 1, got {value!r}")


def check_model_arguments(model, weights=None, image_size=None):
    """What `train` builds, checked before any data is read: a registry name that exists, or a file that does
    (`names_a_file`: a path or a file suffix; a .tflite or a checkpoint is named when loaded); `weights` only with a registry name (a file or a keras.Model brings its own, and they were ignored);
    `image_size` a whole number >= 1 or a (height, width) pair of them (0 meant the default, a string was taken)."""
    is_file = isinstance(model, (str, os.PathLike)) and names_a_file(model)
    if is_file:
        require_model_file(model)
    elif isinstance(model, str):
        registered_name(model)
    if weights is not None and (is_file or not isinstance(model, str)):
        brings = ("without a model, train builds the digits demo's Mixer, which has no release" if model is None
                  else f"{model if is_file else 'a keras.Model'} brings its own")
        raise TrainingError(f"weights={weights!r} load into a registry model (model='mixer_b16', ...); {brings}")
    check_image_size(image_size)


def check_image_size(image_size):
    """TrainingError unless `image_size` is None, a whole number >= 1 or a (height, width) pair of them."""
    square = not isinstance(image_size, (tuple, list))  # (224,) failed to unpack where the size was read
    sides = (image_size,) if square else image_size
    if image_size is not None and not ((square or len(sides) == 2) and all(
            is_whole_number(side) and side >= 1 for side in sides)):
        raise TrainingError(f"image_size must be a whole number >= 1 or a (height, width) pair of them, got "
                            f"{image_size!r}")


def check_run_folder(output_dir, model_filename="model.keras", overwrite=False):
    """TrainingError if `output_dir` holds a finished run (its report.json beside the model), unless `overwrite`:
    a finished run is never continued or replaced by accident."""
    # "model" failed in Keras' save after the whole run; "model.h5" wrote Keras' legacy format, "sub/model.keras" a
    # file outside the run's own files
    if not (isinstance(model_filename, str) and model_filename.endswith(".keras")
            and os.path.basename(model_filename) == model_filename):
        raise TrainingError(f"model_filename must be a file name ending in .keras (written in the run folder), got "
                            f"{model_filename!r}")
    finished = (output_dir / "report.json").is_file() and (output_dir / model_filename).is_file()
    require_output_folder(output_dir, TrainingError, "run folder")
    if finished and not overwrite:
        raise TrainingError(f"{output_dir} holds a finished run ({model_filename}, report.json): choose a new "
                            "--output, or pass --overwrite to train again from scratch and replace it")


LOCK_FILE = "run.lock"


@contextlib.contextmanager
def run_folder_lock(output_dir):
    """Holds output_dir/run.lock (this process's id, host and start time) while a run writes the folder: a second
    run into it is refused naming the holder, whatever the timing (the lock is created exclusively). A lock whose
    process is gone (a killed run, on this host) is stale and taken over."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                other = json.loads(path.read_text(encoding="utf-8") or "{}")
                age = time.time() - path.stat().st_mtime
            except (OSError, ValueError):
                other, age = {}, 0.0  # being written or removed this instant
            if other and _running(other):
                raise TrainingError(f"{output_dir} is being written by another run (process {other.get('pid')} on "
                                    f"{other.get('host')}, since {other.get('started')}): wait for it to end, or "
                                    f"choose a new --output") from None
            if other or age > 10:  # stale (its process has ended, or it was never written): move it aside, claim
                aside = path.with_name(f"{LOCK_FILE}.stale.{os.getpid()}")
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, aside)
                    aside.unlink()
            else:
                time.sleep(0.05)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(holder, file)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _running(holder):
    """Whether the process a lock names still runs (one on another host is taken to run: it cannot be asked)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return int(holder.get("pid", 0)) > 0


def claim_run_folder(output_dir, definition, overwrite=False):
    """Records what defines this run in output_dir/run.json. A folder already recorded for another run (any field
    different) is refused unless `overwrite`; with `overwrite` its backups are removed, so the run starts afresh."""
    import shutil

    definition = json.loads(json.dumps(definition, default=str))  # as it reads back
    path = output_dir / RUN_FILE
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if previous is not None and "model" in previous:  # a run recorded under a variant's former name is the same run
        previous["model"] = variant_name(previous["model"])
    if overwrite:
        for backup in output_dir.glob("backup*"):
            shutil.rmtree(backup, ignore_errors=True)
    elif previous is not None and previous != definition:
        field = next(k for k in sorted(set(previous) | set(definition)) if previous.get(k) != definition.get(k))
        raise TrainingError(f"{output_dir} belongs to another run ({field}: {_brief(previous.get(field))} there, "
                            f"{_brief(definition.get(field))} now): choose a new --output, or pass --overwrite to "
                            "replace that run")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(definition, indent=2))


def _brief(value, limit=80):
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def evaluate_model(model, eval_data):
    """Top-1 / top-5 accuracy of a compiled or plain model on batches of (images, one-hot labels[, weights]), and how
    many images they were measured on (a file that fails to decode is left out by the pipeline; rows of weight 0
    pad a batch to split evenly over devices and are left out here)."""
    scores, labels = [], []
    for batch in eval_data:
        images, one_hot = batch[:2]
        kept = np.asarray(batch[2]) > 0 if len(batch) == 3 else slice(None)
        scores.append(keras.ops.convert_to_numpy(model(images, training=False)).astype("float32")[kept])
        labels.append(np.argmax(np.asarray(one_hot), axis=-1)[kept])
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    return {"eval_top1": top_k_accuracy(scores, labels, 1), "eval_top5": top_k_accuracy(scores, labels, 5),
            "eval_examples": int(len(labels))}


def _recorded_crop(info):
    """The evaluation crop a `.keras` file recorded, as a recipe override (none when it recorded none)."""
    return {"eval_crop_fraction": info["crop_fraction"]} if info.get("crop_fraction") is not None else {}


def _model_and_info(model, weights=None, image_size=None):
    """A keras.Model as it is (nothing recorded); a registry name built with `weights` at `image_size` (its
    class names ImageNet's synsets, as tfds' imagenet2012 names its classes, where its head has ImageNet's
    classes); or a `.keras` file loaded with what `train` recorded in it."""
    if isinstance(model, str) and not names_a_file(model):
        from keras_mixer.models.registry import trained_variant
        from keras_mixer.preprocessing import LABEL_FILES, imagenet_labels

        size = {"input_shape": (*image_shape(image_size), 3)} if image_size else {}
        model = trained_variant(model, weights, **size)
        classes = model.output_shape[-1]
        return model, ({"class_names": [synset for synset, _ in imagenet_labels(classes)]}
                       if classes in LABEL_FILES else {})
    refuse_weights_beside(model, weights, TrainingError)
    return (model, {}) if isinstance(model, keras.Model) else load_keras_model_with_info(model)


def evaluate(model, dataset=DIGITS, image_size=None, batch_size=256, data_dir=None, download=False, recipe=None,
             weights=None, crop_fraction=None):
    """Top-1 / top-5 of a `.keras` file (or keras.Model, or a registry name with its `weights`: a pretrained tag
    or a checkpoint file, as timm's validate.py takes a model name) on the eval split of `dataset`, preprocessed as
    the model was evaluated in training (the crop recorded in its file), else as `recipe` or the dataset says
    (tfds datasets: timm's central 87.5 %); `crop_fraction` (timm's --crop-pct) overrides the crop."""
    check_run_length(batch_size=batch_size)
    check_crop_fraction(crop_fraction, TrainingError)
    check_image_size(image_size)
    check_dataset(dataset)  # before the model is loaded
    model, info = _model_and_info(model, weights, image_size)
    model_size = model_image_size(model)
    if image_size and model_size is not None and image_shape(image_size) != image_shape(model_size):
        raise TrainingError(f"--image-size {image_size} does not match the model's input size {model_size}")
    image_size = image_size or model_size
    source = load_source(dataset, "eval", data_dir, download, image_size)
    check_model_classes(model.name, model.output_shape[-1], info.get("class_names"), source, dataset)
    crop = {"eval_crop_fraction": crop_fraction} if crop_fraction is not None else _recorded_crop(info)
    recipe = get_recipe(recipe or default_recipe(dataset, None), **crop)
    result = evaluate_model(model, make_pipeline(source, image_size, batch_size, recipe, training=False))
    return {"model": model.name, "dataset": dataset, "examples": result.pop("eval_examples"),
            "files": source.num_examples, **result}


def quantization_aware_training(model, dataset=DIGITS, output_dir="runs/qat", calibration_samples=256,
                                recipe="qat", data_dir=None, download=False, **train_options):
    """Quantization-aware fine-tuning of a trained float model on `dataset`, with `train`'s input pipeline,
    backups and resume. It first measures what QAT has to beat: the float model's validation top-1 and that of its
    post-training int8 export (`to_tflite` calibrated on `calibration_samples` training images, preprocessed as for
    evaluation). The float model's outlier channels are then equalized on the same images (`equalize_channels`:
    the same function), its fake-quant copy (`keras_mixer.quantization.quantize_model`) starts from ranges
    calibrated on them and trains with the "qat" recipe (AdamW at 1e-4, no augmentation) unless told otherwise,
    ending with the weights of its best interval on validation (the calibrated start included).

    `model`: a `.keras` file or keras.Model (the class names and crop recorded in the file are kept).
    `train_options`: as for `train` (epochs, steps, batch_size, strategy, ...).
    Writes `output_dir/model_qat.keras` (with the three top-1s recorded in it, which `keras-mixer export` reads)
    and report.json with the float, post-training int8 and QAT eval top-1 side by side.
    Returns (QAT model, report).
    """
    from keras_mixer.datasets import calibration_images
    from keras_mixer.export.equalize import equalize_channels
    from keras_mixer.quantization import is_quantized, quantize_model

    check_run_length(*(train_options.get(name) for name in RUN_LENGTH))
    check_run_folder(Path(output_dir), "model_qat.keras", train_options.get("overwrite", False))
    check_dataset(dataset)  # before the model is loaded
    if isinstance(model, str) and variant_name(model) in list_models():  # its message named a --weights qat lacks
        raise TrainingError(f"qat fine-tunes a model trained on your data: give its .keras file; {model!r} is a "
                            f"registry name: train it first (keras-mixer train --model {model} --dataset ...)")
    if isinstance(model, (str, os.PathLike)):  # a file, whatever its name: never a registry variant here
        require_model_file(model)
    float_model, info = _model_and_info(model)
    if is_quantized(float_model):  # refused here, not after the float model's evaluation and int8 export
        raise TrainingError(f"{os.fspath(model) if isinstance(model, (str, os.PathLike)) else float_model.name!r} is "
                            "quantization-aware already (a qat output): give the float model it was made from, or "
                            "export it as it is")
    _refuse_another_runs_folder(Path(output_dir), float_model, dataset, train_options.get("overwrite", False))
    image_size = model_image_size(float_model)
    recipe = get_recipe(recipe, **_recorded_crop(info))
    eval_source = load_source(dataset, "eval", data_dir, download, image_size)
    check_model_classes(float_model.name, float_model.output_shape[-1], info.get("class_names"), eval_source, dataset)
    float_report = evaluate_model(float_model, make_pipeline(eval_source, image_size, 256, recipe, training=False))
    print(f"float model: eval top-1 {float_report['eval_top1']:.2%} on {eval_source.num_examples} images")
    print(f"calibrating the fake-quant ranges on {calibration_samples} training images")
    calibration = calibration_images(dataset, image_size, calibration_samples, crop_fraction_for(recipe, eval_source),
                                     data_dir, download)
    ptq_top1 = int8_top1(float_model, calibration, eval_source, recipe)
    print(f"its post-training int8 export: eval top-1 {ptq_top1:.2%}")
    equalized, _ = equalize_channels(float_model, calibration)
    baselines = {"float_eval_top1": float_report["eval_top1"], "ptq_eval_top1": ptq_top1}
    qat_model, report = train(
        model=lambda: quantize_model(under_global_policy(equalized), calibration_data=calibration,
                                     verbose=1 if sys.stdout.isatty() else 2), dataset=dataset,
        output_dir=output_dir, recipe=recipe, image_size=image_size, data_dir=data_dir, download=download,
        model_filename="model_qat.keras", keep_best=True, model_info=baselines, **train_options,
    )
    report.update({**baselines, "float_eval_top5": float_report["eval_top5"]})
    write_text(Path(output_dir) / "report.json", json.dumps(report, indent=2, default=str))
    return qat_model, report


def _refuse_another_runs_folder(output_dir, float_model, dataset, overwrite):
    """What `claim_run_folder` refuses once the QAT model is built, refused before the float model's evaluation and
    int8 export (minutes on a large model): a folder recorded for another dataset, or for a run of the float model
    itself (`qat runs/float/model.keras --output runs/float`), whose parameter count no QAT copy has (its fake-quant
    ranges are variables)."""
    path = output_dir / RUN_FILE
    if overwrite or not path.is_file():
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous.get("params") == float_model.count_params():
        other = f"the training run of the float model {float_model.name!r}; its QAT run needs a folder of its own"
    elif previous.get("dataset") != str(dataset):
        other = f"dataset: {_brief(previous.get('dataset'))} there, {_brief(str(dataset))} now"
    else:
        return
    raise TrainingError(f"{output_dir} belongs to another run ({other}): choose a new --output, or pass --overwrite "
                        "to replace that run")


def int8_top1(model, calibration, eval_source, recipe):
    """Validation top-1 of `model`'s default int8 export (post-training, calibrated on `calibration`), run by LiteRT."""
    import tempfile

    from keras_mixer.export import evaluate_tflite, to_tflite

    image_size = model_image_size(model)
    batches = ((images, np.argmax(one_hot, axis=-1))
               for images, one_hot in make_pipeline(eval_source, image_size, 64, recipe, training=False))
    with tempfile.TemporaryDirectory() as scratch:
        path = to_tflite(model, Path(scratch) / "ptq_int8.tflite", "int8", representative_data=calibration,
                         metadata=False)
        report, _ = evaluate_tflite(path, batches)
    return report["top1"]
