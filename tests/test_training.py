"""Training: recipe objects, input pipelines, distribution, resumable runs and the train/evaluate CLI."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_mixer_cli import main
from keras_mixer.errors import DataError, KerasMixerError, TrainingError
from keras_mixer.training import (
    PRESETS,
    Recipe,
    SigmoidCrossEntropy,
    compile_model,
    connect_hosts,
    get_distribution,
    get_recipe,
    load_source,
    make_optimizer,
    make_pipeline,
    make_schedule,
    train,
)
from keras_mixer.training.data import eval_transform

HERE = Path(__file__).parent


def small_model(classes=3):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(8, name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x))


# --- recipe ----------------------------------------------------------------------------------------------------


def test_presets_carry_the_published_hyper_parameters():
    finetune, scratch = PRESETS["finetune"], PRESETS["scratch"]
    # vision_transformer fine-tune: SGD momentum 0.9, lr 0.03 @ batch 512, 500 warmup, cosine, clip 1, no wd
    assert (finetune.optimizer, finetune.momentum, finetune.learning_rate, finetune.batch_size) == ("sgd", 0.9, 0.03, 512)
    assert (finetune.warmup_steps, finetune.decay, finetune.clip_global_norm, finetune.weight_decay) == (500, "cosine", 1.0, 0)
    assert not (finetune.mixup_alpha or finetune.randaugment or finetune.drop_path_rate or finetune.label_smoothing)
    # big_vision mlp_mixer_i1k: Adam lr 1e-3 @ 4096, wd 1e-4 (not lr-scaled), 10k warmup, linear to 1e-5,
    # sigmoid xent, RandAugment(2, 15), mixup 0.5, stochastic depth 0.1
    assert (scratch.learning_rate, scratch.batch_size, scratch.warmup_steps, scratch.decay) == (1e-3, 4096, 10_000, "linear")
    assert scratch.weight_decay * scratch.learning_rate == pytest.approx(1e-4)
    assert (scratch.loss, scratch.randaugment, scratch.mixup_alpha, scratch.drop_path_rate) == ("sigmoid", (2, 15), 0.5, 0.1)
    assert scratch.end_fraction == 1e-5


def test_recipe_errors_name_the_problem():
    with pytest.raises(TrainingError, match="unknown recipe 'fast'"):
        get_recipe("fast")
    with pytest.raises(TrainingError, match="unknown recipe fields"):
        get_recipe("digits", learning_rat=1.0)
    assert get_recipe("finetune", learning_rate=0.01).learning_rate == 0.01
    assert get_recipe("scratch", randaugment=None).randaugment is None  # None switches it off
    with pytest.raises(TrainingError, match="recipe field mixup_alpha=None: give it a value"):
        get_recipe("scratch", mixup_alpha=None)
    with pytest.raises(TrainingError, match=r"recipe field warmup_steps=-5: must be an integer >= 0"):
        get_recipe("digits", warmup_steps=-5)  # a negative warmup would have started the decay early
    with pytest.raises(TrainingError, match=r"recipe field end_fraction=2: must be a number >= 0 and <= 1"):
        get_recipe("digits", end_fraction=2)  # a decay that rises
    with pytest.raises(TrainingError, match=r"recipe field decay='exponential': must be 'cosine' or 'linear'"):
        get_recipe("digits", decay="exponential")
    with pytest.raises(TrainingError, match=r"recipe field batch_size=64.0: must be an integer >= 1"):
        Recipe(batch_size=64.0)


@pytest.mark.parametrize("options, refusal", [
    (dict(steps=0), "steps must be an integer >= 1, got 0"),  # was a ZeroDivisionError deep in the run
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(epochs=2.5), "epochs must be an integer >= 1, got 2.5"),
    (dict(checkpoint_every=-1), "checkpoint_every must be an integer >= 1, got -1"),
    (dict(epochs=2, steps=10), r"give epochs or steps, not both \(got epochs=2, steps=10\)"),  # one was ignored
])
@pytest.mark.parametrize("run", ["train", "quantization_aware_training"])
def test_a_run_length_the_command_line_would_refuse_is_refused_before_any_work(tmp_path, run, options, refusal):
    from keras_mixer import training

    with pytest.raises(TrainingError, match=refusal):
        getattr(training, run)(str(tmp_path / "no_such_model.keras"), output_dir=tmp_path / "run", **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, refusal", [
    (dict(seed="1"), "seed must be a whole number >= 0, got '1'"),  # Keras' ValueError from set_random_seed
    (dict(model_filename="model"), "model_filename must be a file name ending in .keras .*got 'model'$"),  # failed
    # in Keras' save after the whole run; the next wrote Keras' legacy H5 format, the last outside the run's files
    (dict(model_filename="model.h5"), "model_filename must be .*got 'model.h5'"),
    (dict(model_filename="sub/model.keras"), "model_filename must be .*got 'sub/model.keras'"),
])
def test_a_seed_or_model_file_name_train_would_misuse_is_refused_before_any_work(tmp_path, options, refusal):
    with pytest.raises(TrainingError, match=refusal):
        train(dataset="digits", output_dir=tmp_path / "run", steps=1, **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, image_size", [("mixer_s32", 32), ("sparse_mlp_small", 32), ("as_mlp_tiny", 32),
                                              ("hire_mlp_tiny", 32), ("vip_small14", 224), ("raft_mlp_small", 32)])
def test_every_family_builds_from_its_registry_name_with_the_recipe_regularization(name, image_size):
    """The trainer gives every family the recipe's stochastic depth and head dropout (four families took no
    dropout_rate: `keras-mixer train --model raft_mlp_small` was a TypeError)."""
    from keras_mixer.training.trainer import build_model

    recipe = get_recipe("scratch", drop_path_rate=0.1, dropout_rate=0.2)
    model = build_model(name, 3, image_size, None, recipe)
    assert model.output_shape == (None, 3) and model.get_layer("head").activation.__name__ == "linear"
    assert model.get_layer("head_dropout").rate == 0.2
    assert any(getattr(layer, "drop_path_rate", 0) > 0 for layer in model.layers)


def test_a_misspelt_model_or_a_missing_model_file_is_refused_before_the_data_is_read(tmp_path):
    from keras_mixer.errors import WeightsError
    from keras_mixer.training import evaluate, train

    missing_data = str(tmp_path / "no_such_folder")  # read first, it would be the error named
    with pytest.raises(KerasMixerError, match="unknown model 'mixer_s61'; did you mean mixer_s16"):
        train("mixer_s61", dataset=missing_data, output_dir=tmp_path / "run")
    with pytest.raises(WeightsError, match="model file '.*gone.keras' does not exist"):
        train(str(tmp_path / "gone.keras"), dataset=missing_data, output_dir=tmp_path / "run")
    # each was taken without a word: 0 as the default size, a string as a size, weights with nothing to load them into
    for options, refusal in [(dict(image_size=0), "image_size must be a whole number >= 1 .*got 0"),
                             (dict(image_size="32"), "image_size must be .*got '32'"),
                             (dict(image_size=(32, 0)), r"image_size must be .*got \(32, 0\)"),
                             (dict(image_size=(32,)), r"image_size must be .*got \(32,\)"),  # failed to unpack
                             (dict(recipe={"learning_rate": 1.0}), "recipe must be a preset name .* or a Recipe, got "
                                                                   "dict: give fields as keyword arguments"),
                             (dict(weights="imagenet"), "weights='imagenet' load into a registry model .*without a "
                                                        "model, train builds the digits demo's Mixer")]:
        with pytest.raises(TrainingError, match=refusal):
            train(dataset=missing_data, output_dir=tmp_path / "run", **options)
    with pytest.raises(DataError, match="dataset must be 'digits', an image folder or a tfds name, got None"):
        train(dataset=None, output_dir=tmp_path / "run")
    # arrays in memory, as fit takes them: an array was NumPy's "truth value ... is ambiguous", a tuple printed whole
    images, labels = np.zeros((20, 32, 32, 3), np.uint8), np.arange(20) % 10
    for dataset, found in [(images, r"a uint8 array of shape \(20, 32, 32, 3\)"),
                           ((images, labels), r"a tuple of 2 with arrays of shapes \[\(20, 32, 32, 3\), \(20,\)\]")]:
        with pytest.raises(DataError, match=f"got {found}: for images in memory, call the model's own fit"):
            train("mixer_s16", dataset=dataset, output_dir=tmp_path / "run")
        with pytest.raises(DataError, match=f"got {found}"):
            evaluate(str(tmp_path / "gone.keras"), dataset=dataset)  # before the model file is looked for
    import tensorflow as tf

    with pytest.raises(DataError, match="got a tf.data.Dataset: for your own pipeline, call the model's own fit"):
        train("mixer_s16", dataset=tf.data.Dataset.from_tensor_slices((images, labels)), output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()

    with pytest.raises(TrainingError, match="batch_size must be an integer >= 1, got 0"):  # was TensorFlow's error
        evaluate(str(tmp_path / "gone.keras"), batch_size=0)
    with pytest.raises(TrainingError, match="image_size must be .*got 0"):  # 0 meant the model's size
        evaluate(str(tmp_path / "gone.keras"), image_size=0)


def test_a_folder_trained_without_a_model_is_told_to_name_one(tmp_path):
    from image_folders import make_image_folders

    make_image_folders(tmp_path / "images", per_class=5, split_folders=False)  # 3 classes
    with pytest.raises(TrainingError, match="model has 10 outputs but .* has 3 classes; without a model train builds "
                                            "the digits demo's Mixer: name one"):
        train(dataset=str(tmp_path / "images"), output_dir=tmp_path / "run", steps=1, verbose=0)


def test_qat_of_a_model_that_is_quantization_aware_already_is_refused_first(tmp_path):
    """Refused before the float model's evaluation and int8 export (minutes on a large model), naming the file."""
    from keras_mixer.models.mlp_mixer import build_digits_mixer
    from keras_mixer.quantization import quantize_model
    from keras_mixer.training import quantization_aware_training

    path = tmp_path / "model_qat.keras"
    quantize_model(build_digits_mixer()).save(path)
    with pytest.raises(TrainingError, match=f"'{path}' is quantization-aware already \\(a qat output\\): give the "
                                            "float model"):
        quantization_aware_training(str(path), dataset=str(tmp_path / "no_such_folder"), output_dir=tmp_path / "run")
    # a registry name was told to take --weights, which qat has not
    with pytest.raises(TrainingError, match="qat fine-tunes a model trained on your data: give its .keras file; "
                                            "'mixer_s32' is a registry name: train it first"):
        quantization_aware_training("mixer_s32", output_dir=tmp_path / "run")


def test_qat_into_the_float_models_own_run_folder_is_refused_first(tmp_path, monkeypatch):
    """`qat runs/float/model.keras --output runs/float` was refused once the QAT model was built, after the float
    model's evaluation and int8 export; so is a folder recorded for another dataset. Nothing in it changes."""
    import re

    from keras_mixer.models.mlp_mixer import build_digits_mixer
    from keras_mixer.training import quantization_aware_training, trainer
    from keras_mixer.weights import save_model

    monkeypatch.setattr(trainer, "evaluate_model", lambda *args: pytest.fail("evaluated before the refusal"))
    run = tmp_path / "float"
    model = build_digits_mixer()
    save_model(model, run / "model.keras")
    for record, refusal in (({"params": model.count_params(), "dataset": "digits"},
                             "the training run of the float model 'mixer_digits'; its QAT run needs a folder of its "
                             "own"),
                            ({"params": 1, "dataset": "photos/"}, "dataset: \"photos/\" there, \"digits\" now")):
        (run / "run.json").write_text(json.dumps(record))
        before = sorted((path.name, path.stat().st_mtime_ns) for path in run.iterdir())
        with pytest.raises(TrainingError, match=re.escape(f"{run} belongs to another run ({refusal}): choose a new "
                                                          "--output, or pass --overwrite")):
            quantization_aware_training(str(run / "model.keras"), dataset="digits", output_dir=run)
        assert sorted((path.name, path.stat().st_mtime_ns) for path in run.iterdir()) == before


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_schedule_warms_up_linearly_then_decays_to_the_end_fraction(decay):
    recipe = get_recipe("digits", warmup_steps=10, decay=decay, end_fraction=0.1)
    schedule = make_schedule(recipe, total_steps=110, peak=2.0)
    lr = lambda step: float(schedule(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.0)
    assert lr(5) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(2.0)
    assert lr(110) == pytest.approx(0.2, rel=1e-4)
    midpoint = 0.2 + (2.0 - 0.2) * (0.5 if decay == "linear" else 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr(60) == pytest.approx(midpoint, rel=1e-4)


@pytest.mark.parametrize("warmup", [0, 10])
def test_cosine_schedule_is_keras_cosine_decay_value_for_value(warmup):
    """Ours chooses warmup or decay with `ops.where` (Keras' `ops.cond` is a device read on torch), nothing else."""
    recipe = get_recipe("digits", warmup_steps=warmup, decay="cosine", end_fraction=0.1)
    ours = make_schedule(recipe, total_steps=110, peak=2.0)
    reference = keras.optimizers.schedules.CosineDecay(0.0, 110 - warmup, alpha=0.1, warmup_target=2.0,
                                                       warmup_steps=warmup)
    steps = range(0, 121, 3)
    np.testing.assert_allclose([float(ours(step)) for step in steps], [float(reference(step)) for step in steps],
                               rtol=1e-6, atol=1e-7)
    assert keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(ours)).get_config() == \
        ours.get_config()


def test_weight_decay_shrinks_kernels_only():
    model = small_model()
    recipe = get_recipe("digits", weight_decay=0.5, warmup_steps=0, clip_global_norm=0.0)
    optimizer = make_optimizer(recipe, model, total_steps=10**6, global_batch_size=recipe.batch_size)
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    optimizer.apply_gradients([(keras.ops.zeros(v.shape), v) for v in model.trainable_variables])
    lr = recipe.learning_rate
    for variable, old in zip(model.trainable_variables, before):
        new = keras.ops.convert_to_numpy(variable)
        expected = old * (1 - lr * 0.5) if old.ndim >= 2 else old  # zero gradient: only the decay moves weights
        np.testing.assert_allclose(new, expected, rtol=1e-6, err_msg=variable.path)


def test_gradients_are_clipped_by_global_norm():
    model = small_model()
    recipe = get_recipe("finetune", momentum=0.0, warmup_steps=0, learning_rate=1.0, clip_global_norm=1.0)
    optimizer = make_optimizer(recipe, model, total_steps=10**6, global_batch_size=recipe.batch_size)
    before = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    grads = [keras.ops.full(v.shape, 3.0) for v in model.trainable_variables]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    steps = [before[i] - keras.ops.convert_to_numpy(v) for i, v in enumerate(model.trainable_variables)]
    assert math.sqrt(sum(float(np.sum(s**2)) for s in steps)) == pytest.approx(1.0, rel=1e-4)


def test_learning_rate_scales_with_the_global_batch():
    model = small_model()
    recipe = get_recipe("finetune", warmup_steps=0)
    assert float(make_optimizer(recipe, model, 100, 1024).learning_rate) == pytest.approx(0.06)
    assert float(make_optimizer(recipe, model, 100, 1024, scale_learning_rate=False).learning_rate) == pytest.approx(0.03)


def test_sigmoid_cross_entropy_sums_binary_cross_entropy_over_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5)).astype("float32")
    labels = np.eye(5, dtype="float32")[[0, 3, 1, 4]]
    probabilities = 1 / (1 + np.exp(-logits))
    per_class = -(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    expected = per_class.sum(axis=1).mean()
    assert float(SigmoidCrossEntropy()(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_sigmoid_recipe_starts_the_head_bias_at_minus_log_classes():
    model = small_model(classes=1000)
    compile_model(model, get_recipe("scratch"), total_steps=100, global_batch_size=64)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("head").bias), -math.log(1000), rtol=1e-6)


# --- data --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock_cifar10():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=24):
        yield


def test_tfds_pipeline_gives_normalized_images_and_one_hot_labels(mock_cifar10):
    source = load_source("cifar10", "train")
    assert (source.num_classes, source.num_examples) == (10, 24)
    assert len(source.class_names) == 10
    recipe = get_recipe("scratch", randaugment=(2, 9), mixup_alpha=0.0)
    images, labels = next(iter(make_pipeline(source, 16, 8, recipe, training=True)))
    assert images.shape == (8, 16, 16, 3) and labels.shape == (8, 10)
    assert float(np.min(images)) >= -1.0 and float(np.max(images)) <= 1.0
    np.testing.assert_allclose(np.sum(labels, axis=1), 1.0)
    evaluation = make_pipeline(load_source("cifar10", "eval"), 16, 5, training=False)
    assert sum(int(batch[0].shape[0]) for batch in evaluation) == 24  # one full pass, last batch partial


def test_mixup_and_cutmix_mix_one_hot_labels(mock_cifar10):
    source = load_source("cifar10", "train")
    recipe = get_recipe("scratch", randaugment=None, mixup_alpha=0.8, cutmix_alpha=1.0)
    soft = 0
    for images, labels in make_pipeline(source, 16, 8, recipe, training=True).take(4):
        labels = np.asarray(labels)
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
        soft += int(np.sum((labels > 1e-3) & (labels < 1 - 1e-3)))
    assert soft > 0


@pytest.mark.parametrize("augmentation", [
    dict(inception_crop=True, random_flip=True),
    # the official from-scratch recipe's per-example RandAugment(2, 15) and per-batch mixup / cutmix
    dict(inception_crop=True, random_flip=True, randaugment=(2, 15), mixup_alpha=0.5, cutmix_alpha=1.0),
], ids=["crop_flip", "randaugment_mixup_cutmix"])
def test_training_stream_replays_for_every_iterator_and_resumes_by_skipping(augmentation):
    source = load_source("digits", "train")
    recipe = get_recipe("digits", **augmentation)
    # deterministic=True is the promise under test (the trainer's --deterministic): the parallel map keeps order,
    # which a free-running pipeline under load does not
    stream = make_pipeline(source, 32, 16, recipe, training=True, deterministic=True)
    first = [(np.asarray(x), np.asarray(y)) for x, y in stream.take(5)]
    again = [(np.asarray(x), np.asarray(y)) for x, y in stream.take(5)]  # a second iterator over the same object
    resume = make_pipeline(source, 32, 16, recipe, training=True, deterministic=True, skip_batches=3)
    resumed = [(np.asarray(x), np.asarray(y)) for x, y in resume.take(2)]
    for a, b in [*zip(first, again), *zip(first[3:], resumed)]:
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(first[0][0], first[1][0])


def test_eval_transform_resizes_the_short_side_and_crops_the_centre():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 40:] = 255  # left half black, right half white
    out = np.asarray(eval_transform(image, 32))
    # short side 40 -> 32 / 0.875 = 37 (width 74); the central 32 columns straddle the edge at column 37
    assert out.shape == (32, 32, 3)
    assert out[:, :14].max() < 1 and out[:, 18:].min() > 254


def test_image_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for index in range(10):
            keras.utils.save_img(tmp_path / name / f"{index}.png", rng.integers(0, 255, (20, 30, 3)).astype("uint8"))
    train_source, eval_source = load_source(str(tmp_path), "train"), load_source(f"folder:{tmp_path}", "eval")
    assert train_source.class_names == ["cat", "dog"]
    assert train_source.num_examples + eval_source.num_examples == 20
    images, labels = next(iter(make_pipeline(train_source, 24, 4, get_recipe("finetune"), training=True)))
    assert images.shape == (4, 24, 24, 3) and labels.shape == (4, 2)


def test_unknown_names_give_training_errors(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'not_a_dataset'"):
        load_source("not_a_dataset")
    # "cifar-10" was tfds' 18-line parsing error; "imagenet" is tfds' imagenet2012
    with pytest.raises(DataError, match=r"unknown dataset 'cifar-10': .*\(did you mean cifar10 or"):
        load_source("cifar-10")
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet': .*\(did you mean imagenet2012\?\)"):
        load_source("imagenet")
    with pytest.raises(TrainingError, match="unknown strategy 'ring'"):
        get_distribution("ring")
    # JAX's data_parallel on TensorFlow was "unknown", as a misspelling was without its spelling
    with pytest.raises(TrainingError, match=r"on the tensorflow backend \(one of auto, default, mirrored, multi_worker, "
                                            r"tpu\); 'data_parallel' is a jax strategy: run with KERAS_BACKEND=jax"):
        get_distribution("data_parallel")
    with pytest.raises(TrainingError, match=r"unknown strategy 'mirored' .*; did you mean 'mirrored'\?"):
        get_distribution("mirored")
    with pytest.raises(KerasMixerError, match="unknown model 'mixer_x99'"):  # the registry's, as the CLI shows it
        train("mixer_x99", output_dir=tmp_path)
    with pytest.raises(TrainingError, match="20585"):
        train(strategy="multi_worker", output_dir=tmp_path)


def test_tpu_strategy_errors_cleanly_without_a_tpu():
    # in a subprocess: looking for a TPU connects TensorFlow's context to a (local) cluster
    code = ("from keras_mixer.training import get_distribution\n"
            "try:\n    get_distribution('tpu')\nexcept Exception as error:\n"
            "    print(type(error).__name__, str(error).split(':')[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "TrainingError no TPU found (local)" in result.stdout


# --- distribution ------------------------------------------------------------------------------------------------


def test_mirrored_over_two_cpus_equals_single_device_training(tmp_path):
    out = tmp_path / "weights.npz"
    subprocess.run([sys.executable, str(HERE / "distributed_run.py"), "mirrored", str(out)], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
    arrays = np.load(out)
    assert int(arrays["mirrored_replicas"]) == 2
    count = sum(1 for key in arrays.files if key.startswith("initial_"))
    moved = max(np.abs(arrays[f"default_{i}"] - arrays[f"initial_{i}"]).max() for i in range(count))
    difference = max(np.abs(arrays[f"default_{i}"] - arrays[f"mirrored_{i}"]).max() for i in range(count))
    print(f"weights moved by up to {moved:.2e}; mirrored vs single device differ by {difference:.2e}")
    assert moved > 1e-4
    assert difference < 1e-2 * moved  # float summation order only (measured: 6e-8 vs 5e-4)


@pytest.mark.parametrize("devices", [2, 4])
def test_data_parallel_splits_every_batch_and_trains_as_one_device(tmp_path, devices):
    """JAX, N host devices: under `train(strategy="data_parallel")` each device's shard of the compiled training step
    holds global batch / N images, and the weights end where the one-device run on the same global batches ends."""
    out = tmp_path / "weights.npz"
    subprocess.run([sys.executable, str(HERE / "distributed_run.py"), "data_parallel", str(out)], check=True,
                   env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3",
                        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}, timeout=600)
    arrays = np.load(out)
    assert int(arrays["data_parallel_replicas"]) == devices
    assert {tuple(s)[0] for s in arrays["data_parallel_shards"]} == {32 // devices}
    assert {tuple(s)[0] for s in arrays["default_shards"]} == {32}
    assert int(arrays["data_parallel_eval_examples"]) == int(arrays["default_eval_examples"]) == 360  # padding left out
    count = sum(1 for key in arrays.files if key.startswith("initial_"))
    moved = max(np.abs(arrays[f"default_{i}"] - arrays[f"initial_{i}"]).max() for i in range(count))
    difference = max(np.abs(arrays[f"default_{i}"] - arrays[f"data_parallel_{i}"]).max() for i in range(count))
    print(f"weights moved by up to {moved:.2e}; data_parallel over {devices} vs one device differ by {difference:.2e}")
    assert moved > 1e-4
    assert difference < 1e-2 * moved  # float summation order only


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def backup_weights(run_dir):
    import h5py

    arrays = {}
    with h5py.File(run_dir / "latest.weights.h5", "r") as file:
        file.visititems(lambda name, item: arrays.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
    return arrays


@pytest.mark.slow  # two JAX processes joined through a local coordinator: about 2 minutes on 2 cores
def test_two_jax_hosts_agree_with_one_process(tmp_path):
    """`keras-mixer train` on the JAX backend as 2 hosts on 127.0.0.1 (one CPU device each, DataParallel over both,
    each host reading half of every global batch) ends with the weights of the same run in one process."""
    run = ["train", "--steps", "6", "--checkpoint-every", "3", "--batch-size", "32", "--warmup-steps", "1"]
    coordinator = f"127.0.0.1:{free_port()}"
    with open(tmp_path / "hosts.log", "w") as log:
        hosts = [start_cli([*run, "--output", str(tmp_path / "hosts"), "--strategy", "data_parallel",
                            "--coordinator", coordinator, "--num-hosts", "2", "--host-index", str(index)],
                           log, KERAS_BACKEND="jax") for index in (0, 1)]
        assert [host.wait(timeout=600) for host in hosts] == [0, 0], (tmp_path / "hosts.log").read_text()[-3000:]
    with open(tmp_path / "single.log", "w") as log:
        assert start_cli([*run, "--output", str(tmp_path / "single"), "--strategy", "default"], log,
                         KERAS_BACKEND="jax").wait(timeout=600) == 0
    chief, other = backup_weights(tmp_path / "hosts" / "backup"), backup_weights(tmp_path / "hosts" / "backup_worker1")
    single = backup_weights(tmp_path / "single" / "backup")
    report = json.loads((tmp_path / "hosts" / "report.json").read_text())
    assert report["replicas"] == 2 and report["steps"] == 6
    assert not (tmp_path / "hosts" / "backup_worker1" / "metrics.csv").exists()  # only host 0 writes the run files
    kernels = [name for name in single if single[name].ndim == 2]
    assert kernels and chief.keys() == single.keys() == other.keys()
    for name in single:
        np.testing.assert_array_equal(chief[name], other[name])  # the hosts hold one replicated model
        np.testing.assert_allclose(chief[name], single[name], atol=1e-6)  # measured: identical


def test_connect_hosts_needs_the_jax_backend():
    if keras.backend.backend() == "jax":
        pytest.skip("checks the error on the other backends")
    with pytest.raises(TrainingError, match="JAX backend"):
        connect_hosts("127.0.0.1:1234", 2, 0)


def test_diverged_run_raises_and_writes_no_report(tmp_path):
    from keras_mixer.models.mlp_mixer import build_digits_mixer

    model = build_digits_mixer()
    model.get_layer("head").bias.assign(np.full(10, np.nan, "float32"))  # NaN logits from the first step
    with pytest.raises(TrainingError, match="diverged"):
        train(model, output_dir=tmp_path, steps=4, checkpoint_every=2, verbose=0)
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "backup" / "latest.weights.h5").exists()


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_run_on_jax_or_torch_never_waits_for_a_steps_loss_and_still_stops_on_nan(tmp_path, backend):
    """JAX and torch dispatch a step before the last one finished, unless the host waits for its loss: Keras runs
    batch-end hooks on its callback thread only when every callback allows it, and the trainer's do. A NaN loss,
    noted there, still stops the run by the end of its checkpoint interval (on JAX the host has dispatched the
    interval's steps by the time the first loss is read), and the run is refused."""
    pytest.importorskip(backend, reason="install the test extra: pip install -e '.[test]'")
    script = f"""
import threading
import numpy as np
from keras_mixer.errors import TrainingError
from keras_mixer.models.mlp_mixer import build_digits_mixer
from keras_mixer.training import callbacks, train

on_main_thread = []
note_loss = callbacks.StopOnNonFiniteLoss.on_train_batch_end
def probe(self, batch, logs=None):
    on_main_thread.append(threading.current_thread() is threading.main_thread())
    note_loss(self, batch, logs)
callbacks.StopOnNonFiniteLoss.on_train_batch_end = probe

model = build_digits_mixer()
model.get_layer("head").bias.assign(np.full(10, np.nan, "float32"))  # NaN logits from the first step
try:
    train(model, output_dir={str(tmp_path)!r}, steps=40, checkpoint_every=20, keep_best=False, verbose=0)
    raise AssertionError("the NaN run was not refused")
except TrainingError as error:
    assert "diverged" in str(error), error
assert on_main_thread and not any(on_main_thread), on_main_thread
assert len(on_main_thread) <= 20, f"{{len(on_main_thread)}} steps: not stopped at the interval's end"
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300,
                   env={**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "backup" / "latest.weights.h5").exists()


@pytest.mark.parametrize("device, chosen", [
    (("gpu", "NVIDIA H200", 9.0), "mixed_bfloat16"), (("gpu", "NVIDIA A100", 8.0), "mixed_bfloat16"),
    (("gpu", "Tesla V100", 7.0), "mixed_float16"), (("tpu", "TPU", None), "mixed_bfloat16"),
    (("cpu", "CPU", None), "float32")])
def test_precision_auto_follows_the_device(monkeypatch, device, chosen):
    from keras_mixer.training import distribute

    monkeypatch.setattr(distribute, "accelerator", lambda: device)
    policy, why = distribute.choose_precision("auto")
    assert policy == chosen and why.startswith("auto: ")


@pytest.mark.parametrize("device, asked, refusal", [
    (("gpu", "Tesla V100", 7.0), "mixed_bfloat16", "no bfloat16 tensor cores"),
    (("tpu", "TPU", None), "mixed_float16", "TPUs compute in bfloat16")])
def test_precision_the_device_cannot_honour_is_refused(monkeypatch, device, asked, refusal):
    from keras_mixer.training import distribute

    monkeypatch.setattr(distribute, "accelerator", lambda: device)
    with pytest.raises(TrainingError, match=refusal):
        distribute.choose_precision(asked)
    assert distribute.choose_precision("float32")[0] == "float32"  # always honoured


def test_train_defaults_to_auto_precision_and_says_what_it_chose(tmp_path, capsys):
    from keras_mixer.training.distribute import accelerator

    _, report = train(output_dir=tmp_path, steps=2, checkpoint_every=2, verbose=0)
    assert report["precision"] == "float32" and report["precision_choice"].startswith("auto: no GPU or TPU")
    assert accelerator()[0] == "cpu"
    out = capsys.readouterr().out
    assert "precision float32 (auto: no GPU or TPU" in out
    assert json.loads((tmp_path / "report.json").read_text())["precision_choice"] == report["precision_choice"]
    # the digits recipe's 40 warmup steps, shortened to half this 2-step run: the schedule followed is recorded
    assert report["recipe"]["warmup_steps"] == 40
    assert report["learning_rate_schedule"] == {"decay": "cosine", "peak": pytest.approx(2e-3), "warmup_steps": 1,
                                                "total_steps": 2, "end_fraction": 0.0}
    assert "learning rate 0.002 at batch 64 (the recipe's 0.002 at 64), warmup 1 of 2 steps, cosine decay" in out


def test_training_feeds_uint8_pixels_and_saves_the_float_input_model(tmp_path):
    """The pipeline hands uint8 pixels that round the float pipeline's images; the model that trains scales them
    on the device exactly as `preprocess_input`; the saved model keeps its [-1, 1] float input."""
    from keras_mixer.models.mlp_mixer import build_digits_mixer
    from keras_mixer.training.feed import with_pixel_input

    source, recipe = load_source("digits", "eval"), get_recipe("digits")
    floats, _ = next(iter(make_pipeline(source, 32, 16, recipe)))
    pixels, _ = next(iter(make_pipeline(source, 32, 16, recipe, pixels=True)))
    assert pixels.dtype == "uint8"
    np.testing.assert_array_equal(np.asarray(pixels), np.round((np.asarray(floats) + 1) * 127.5).astype("uint8"))
    model = build_digits_mixer()
    model.get_layer("head").kernel.assign(np.random.default_rng(0).normal(0, 0.1, (64, 10)).astype("float32"))
    scaled = np.asarray(pixels).astype("float32") / 127.5 - 1.0
    np.testing.assert_allclose(np.asarray(with_pixel_input(model)(pixels)), np.asarray(model(scaled)), atol=1e-5)
    train(build_digits_mixer(), output_dir=tmp_path, steps=2, checkpoint_every=2, verbose=0)
    saved = keras.models.load_model(tmp_path / "model.keras")
    assert saved.input.dtype == "float32" and saved.input_shape == (None, 32, 32, 3)


def test_the_feeder_thread_places_batches_ahead_in_order_within_its_depth_raises_and_stops():
    """`ahead` (under `cuda_batches`, whose pinned copies need a GPU): while the step holds batch k the thread has
    placed k+1 and at most `depth` more wait; an error in the source reaches the consumer; closing the stream of an
    endless source ends the thread."""
    import itertools
    import threading

    from keras_mixer.training.feed import ahead

    placed, enough = [], threading.Event()

    def place(item):
        placed.append(item)
        if len(placed) == 4:
            enough.set()
        return item * 10

    stream = ahead(iter(range(8)), place, depth=2)
    assert next(stream) == 0
    assert enough.wait(10)  # 1 and 2 wait in the queue, 3 is placed and offered
    time.sleep(0.3)
    assert placed == [0, 1, 2, 3]
    assert list(stream) == [10, 20, 30, 40, 50, 60, 70]

    def broken_source():
        yield 1
        raise DataError("record 2 is not an image")

    stream = ahead(broken_source(), lambda item: item, depth=2)
    assert next(stream) == 1
    with pytest.raises(DataError, match="record 2"):
        next(stream)

    feeders = lambda: [t for t in threading.enumerate() if t.name == "keras_mixer-feed"]  # noqa: E731
    stream = ahead(itertools.count(), lambda item: item, depth=2)
    assert next(stream) == 0 and feeders()
    stream.close()
    assert not feeders()


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    """A digits model trained two steps in float32 (a run folder), for the tests that fine-tune a loaded model."""
    output = tmp_path_factory.mktemp("float")
    train(output_dir=output, steps=2, checkpoint_every=2, verbose=0)
    return output


def test_mixed_bfloat16_trains_a_loaded_model_and_saves_float32(tmp_path, float_run):
    """A `.keras` file trained in float32 fine-tunes under mixed_bfloat16 (its layers recorded float32 while their
    sub-layers take the global policy: a block once failed at its residual sum), the run saves a float32 model, and
    the caller's policy is back afterwards."""
    model, report = train(str(float_run / "model.keras"), output_dir=tmp_path / "bf16", steps=4,
                          checkpoint_every=2, precision="mixed_bfloat16", verbose=0)
    assert keras.config.dtype_policy().name == "float32"
    assert report["precision"] == "mixed_bfloat16" and report["steps"] == 4
    assert {layer.dtype_policy.name for layer in model.layers[1:]} == {"mixed_bfloat16"}
    assert np.isfinite(read_csv(tmp_path / "bf16" / "metrics.csv")[-1]["loss"])
    saved = keras.models.load_model(tmp_path / "bf16" / "model.keras")
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    np.testing.assert_array_equal(saved.get_weights()[0], model.get_weights()[0])


def test_qat_trains_under_mixed_bfloat16(tmp_path, float_run):
    """QAT of a float32 `.keras` under mixed_bfloat16 (the `auto` choice on a GPU): the fake-quant layers decide their
    int8 levels in float32 and hand on bfloat16; the QAT model is saved as float32 and loads back."""
    from keras_mixer.quantization.qat import is_quantized
    from keras_mixer.training import quantization_aware_training

    _, report = quantization_aware_training(str(float_run / "model.keras"), output_dir=tmp_path / "qat",
                                            steps=2, checkpoint_every=2, calibration_samples=32,
                                            precision="mixed_bfloat16", verbose=0)
    assert report["precision"] == "mixed_bfloat16" and report["steps"] == 2
    saved = keras.models.load_model(tmp_path / "qat" / "model_qat.keras")
    assert is_quantized(saved)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}


def test_a_second_run_into_a_folder_being_written_is_refused_naming_the_holder(tmp_path):
    """run.lock holds the writing run's process: a live holder refuses the second run before it writes anything;
    a holder that has ended (a killed run) is stale and taken over; the lock is gone when a run ends."""
    import socket

    (tmp_path / "run.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                    "started": "2026-12-04 10:00:00"}))
    with pytest.raises(TrainingError, match=rf"being written by another run \(process {os.getpid()} on "):
        train(output_dir=tmp_path, steps=2, checkpoint_every=2, verbose=0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.lock"]  # nothing written
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run.lock").write_text(json.dumps({"pid": int(ended.stdout), "host": socket.gethostname()}))
    train(output_dir=tmp_path, steps=2, checkpoint_every=2, verbose=0)
    assert (tmp_path / "report.json").is_file() and not (tmp_path / "run.lock").exists()


def test_a_batch_larger_than_the_training_split_is_noticed(tmp_path, capsys):
    from image_folders import CLASSES, make_image_folders

    from keras_mixer.models.mlp_mixer import build_digits_mixer

    make_image_folders(tmp_path / "few", per_class=5, split_folders=False)
    train(build_digits_mixer(classes=len(CLASSES)), dataset=str(tmp_path / "few"), output_dir=tmp_path / "run",
          steps=1, batch_size=64, recipe="digits", verbose=0)
    assert "note: batch 64 is more than the" in capsys.readouterr().out


def test_a_run_folder_inside_the_dataset_folder_is_refused(tmp_path):
    from image_folders import make_image_folders

    make_image_folders(tmp_path / "images", per_class=5, split_folders=False)
    with pytest.raises(TrainingError, match=r"is inside the dataset folder .*would be read as data"):
        train(dataset=str(tmp_path / "images"), output_dir=tmp_path / "images" / "runs" / "a", steps=1, verbose=0)
    assert not (tmp_path / "images" / "runs").exists()


# --- resumable runs and the CLI ------------------------------------------------------------------------------------

RUN = ["--epochs", "3", "--checkpoint-every", "11", "--deterministic"]


def read_csv(path):
    with open(path, newline="") as file:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(file)]


def start_cli(args, log, interruptible=False, **environment):
    """`keras-mixer ARGS` in a new process. `interruptible`: with Python's own Ctrl-C handling, as a terminal's
    foreground command has it, even where this test run was started with SIGINT ignored (a shell's background job),
    which the process would inherit."""
    default_sigint = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      if interruptible else "")
    command = [sys.executable, "-c", default_sigint + "import sys; from keras_mixer_cli import main; sys.exit(main())",
               *args]
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **environment})


def wait_for_rows(csv_path, rows, process, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if csv_path.exists() and len(read_csv(csv_path)) >= rows:
            return
        time.sleep(0.2)
    raise AssertionError(f"{csv_path} never reached {rows} rows")


KILLS = 3


@pytest.fixture(scope="module")
def killed_and_uninterrupted_runs(tmp_path_factory):
    """One run killed with SIGKILL three times in a row at random points (after a random number of finished
    intervals, plus a random delay into the next one, which may fall inside a backup write) and restarted each
    time, and the same run uninterrupted, side by side (2 cores, one process each)."""
    root = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(20261125)
    kill_after_rows = sorted(rng.choice(np.arange(1, 6), KILLS, replace=False))
    backups = []
    with open(root / "reference.log", "w") as log:
        reference = start_cli(["train", "--output", str(root / "reference"), *RUN], log)
        killed = root / "killed"
        for rows in kill_after_rows:
            with open(root / f"killed_{rows}.log", "w") as killed_log:
                process = start_cli(["train", "--output", str(killed), *RUN], killed_log)
                wait_for_rows(killed / "metrics.csv", rows, process)
                time.sleep(rng.uniform(0.0, 1.0))
                process.send_signal(signal.SIGKILL)
                process.wait()
            backups.append(len(backup_weights(killed / "backup")))  # every kill leaves a readable backup
        with open(root / "killed_final.log", "w") as killed_log:
            assert start_cli(["train", "--output", str(killed), *RUN], killed_log).wait() == 0
        assert reference.wait() == 0
    assert len(backups) == KILLS and min(backups) > 0
    return root / "reference", killed


def test_killed_run_resumes_to_the_same_steps_and_curve(killed_and_uninterrupted_runs):
    reference, killed = killed_and_uninterrupted_runs
    expected, resumed = read_csv(reference / "metrics.csv"), read_csv(killed / "metrics.csv")
    assert [row["epoch"] for row in resumed] == list(range(6))  # one row per interval, none lost or repeated
    for a, b in zip(expected, resumed):  # deterministic data + re-seeded dropout: the very same curve
        assert a == pytest.approx(b, rel=1e-5)
    report = json.loads((killed / "report.json").read_text())
    assert report["steps"] == 66 and report["resumed_from_step"] > 0
    assert (killed / "training_curves.png").stat().st_size > 0


def test_cli_evaluate_matches_the_training_report(killed_and_uninterrupted_runs, capsys):
    reference, _ = killed_and_uninterrupted_runs
    assert main(["evaluate", str(reference / "model.keras")]) == 0
    top1 = json.loads((reference / "report.json").read_text())["eval_top1"]
    assert f"top-1 {top1:.2%}" in capsys.readouterr().out


def test_cli_reports_bad_names(capsys, tmp_path):
    assert main(["train", "--dataset", "no_such_set", "--output", str(tmp_path)]) == 2
    assert "unknown dataset 'no_such_set'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing.keras")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command, message", [
    (["train", "--model", "{tflite}"], "model_int8.tflite: a .tflite file, not a .keras model"),  # was: unknown model
    (["train", "--model", "{checkpoint}"], "ck.npz: a checkpoint, not a .keras model: give the model's registry "
                                           "name with this file as its weights (--weights "),  # was: unknown model
    (["evaluate", "mixer_s61"], "unknown model 'mixer_s61'; did you mean mixer_s16"),  # was: no such model file
    (["export", "mixer_s61", "{out}"], "unknown model 'mixer_s61'; did you mean mixer_s16"),  # the same
    (["predict", "{checkpoint}", "{image}"], "ck.npz: a checkpoint, not a .keras model"),
    (["qat", "mixer_s61"], "model file 'mixer_s61' does not exist"),  # qat takes files only
    (["evaluate", "hf-hub:timm/mixer_b16_224.goog_in21k_ft_in1k"], "that is timm's name; here it is 'mixer_b16'"),
])
def test_a_model_is_a_file_or_a_registry_name_alike_in_every_command(command, message, tmp_path, capsys):
    """A model given with a file suffix, a folder part or as an existing file is read as a file, anything else as a
    registry name, in every command: each then names what is wrong with it, a typo its nearest names."""
    (tmp_path / "model_int8.tflite").write_bytes(b"")
    (tmp_path / "ck.npz").write_bytes(b"")
    names = {"tflite": tmp_path / "model_int8.tflite", "checkpoint": tmp_path / "ck.npz", "out": tmp_path / "o.tflite",
             "image": tmp_path / "ck.npz"}
    arguments = [argument.format(**names) for argument in command]
    if command[0] in ("train", "qat"):
        arguments += ["--output", str(tmp_path / "run")]
    assert main(arguments) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "o.tflite").exists()


def test_a_backup_of_another_model_is_refused_not_half_loaded(tmp_path):
    """`qat` pointed at the float run's folder met the float backup: a typed error naming the folder, not
    Keras' 45-object loading failure (or, worse, a resume from the wrong weights)."""
    from keras_mixer.training.callbacks import ResumableBackup

    def small(width):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width), keras.layers.Dense(2)])
        model.compile("adam", "mse")
        return model

    first = small(3)
    first.fit(np.ones((2, 4)), np.ones((2, 2)), epochs=1, verbose=0,
              callbacks=[ResumableBackup(str(tmp_path / "backup"))])
    assert (tmp_path / "backup").exists()
    assert ResumableBackup(str(tmp_path / "backup")).restore(small(3)) == 1  # the same model resumes
    with pytest.raises(TrainingError, match="backup in .*backup was written by a different model"):
        ResumableBackup(str(tmp_path / "backup")).restore(small(5))


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_the_loss_takes_what_the_head_outputs(loss):
    """A builder's default softmax head outputs probabilities: the loss takes them as such (a from-logits loss would
    squash them a second time). Same weights, logits head vs probability head: the same loss value."""
    import keras_mixer

    recipe = get_recipe("digits", loss=loss)
    activation = "softmax" if loss == "softmax" else "sigmoid"
    heads = {}
    for head in (None, activation):
        model = keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=5, classifier_activation=head)
        heads[head] = compile_model(model, recipe, total_steps=10, global_batch_size=8)
    heads[activation].set_weights(heads[None].get_weights())
    for variable in heads[None].weights:  # a non-zero head, so the logits differ per class
        if variable.path.startswith("head/"):
            variable.assign(np.random.default_rng(0).normal(0, 1, variable.shape))
    heads[activation].set_weights(heads[None].get_weights())
    x = np.random.default_rng(1).uniform(-1, 1, (8, 16, 16, 3)).astype("float32")
    y = np.eye(5, dtype="float32")[np.arange(8) % 5]
    losses = [model.evaluate(x, y, verbose=0, return_dict=True)["loss"] for model in heads.values()]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    other = "sigmoid" if loss == "softmax" else "softmax"
    mismatched = keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=5,
                                      classifier_activation=other)
    with pytest.raises(TrainingError, match=f"ends in a {other} head"):
        compile_model(mismatched, recipe, total_steps=10, global_batch_size=8)


def test_ctrl_c_is_one_line_saying_what_was_kept(tmp_path):
    """SIGINT (Ctrl-C) after the first backup: no traceback, one line naming the kept backup, exit 130; the same
    command then resumes from it."""
    output = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--steps", "400", "--checkpoint-every", "5", "--output", str(output)]
    with open(tmp_path / "log.txt", "w") as log:
        process = start_cli(args, log, interruptible=True)
        wait_for_rows(output / "metrics.csv", 1, process)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    last = (tmp_path / "log.txt").read_text().strip().splitlines()[-1]
    assert last == (f"keras-mixer train: interrupted; the last backup in {output} is kept: the same command resumes; "
                    "files it was writing were left as they were")
    assert "Traceback" not in (tmp_path / "log.txt").read_text()


class CtrlCInAFinalizer(keras.callbacks.Callback):
    """Delivers SIGINT while an object's finalizer runs, at the end of batch 2: Python's default handler raises
    KeyboardInterrupt there, where it is printed and dropped."""

    class Finalized:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)

    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            self.Finalized()  # no reference kept: finalized on this line


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped KeyboardInterrupt
@pytest.mark.parametrize("between_steps", [False, True])
def test_ctrl_c_in_a_finalizer_still_stops_the_run_at_the_next_step(between_steps):
    from keras_mixer.training.callbacks import InterruptBetweenSteps

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.zeros((64, 4), "float32"), np.zeros((64, 2), "float32")
    steps = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a command; an xdist worker may differ
    try:
        if not between_steps:  # Python's own handling: the interrupt is dropped and the run goes on to its end
            model.fit(x, y, batch_size=4, epochs=1, callbacks=[CtrlCInAFinalizer(), record], verbose=0)
            assert steps == list(range(16))
            return
        with pytest.raises(KeyboardInterrupt), InterruptBetweenSteps() as interrupt:
            model.fit(x, y, batch_size=4, epochs=1, callbacks=[CtrlCInAFinalizer(), interrupt, record], verbose=0)
        assert interrupt.interrupted and steps == [0, 1, 2]  # stopped as batch 3 began
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    finally:
        signal.signal(signal.SIGINT, previous)


def test_two_train_commands_started_together_into_one_folder(tmp_path):
    """The issue's race: two `keras-mixer train` runs into one --output a moment apart. One trains; the other ends
    in one line (the folder is being written, or already holds the finished run), whatever the timing, and the
    folder holds one run's files: one metrics.csv header."""
    run = ["train", "--epochs", "2", "--checkpoint-every", "11", "--output", str(tmp_path / "run")]
    logs = [open(tmp_path / f"run{index}.log", "w") for index in (0, 1)]
    processes = [start_cli(run, logs[0])]
    time.sleep(2)
    processes.append(start_cli(run, logs[1]))
    codes = [process.wait(timeout=600) for process in processes]
    for log in logs:
        log.close()
    assert sorted(codes) == [0, 2], codes
    refused = (tmp_path / f"run{codes.index(2)}.log").read_text()
    errors = [line for line in refused.splitlines() if "error:" in line]
    assert len(errors) == 1 and ("being written by another run" in errors[0] or "holds a finished run" in errors[0])
    assert "Traceback" not in refused
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert (tmp_path / "run" / "metrics.csv").read_text().count(header) == 1
