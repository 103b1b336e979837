"""The same saved model gives the same output on the TensorFlow, JAX and PyTorch backends, trains and round-trips."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_mixer
from families import TINY

pytestmark = pytest.mark.backends


def run_on(backend, script):
    """Runs `script` in a process on the Keras `backend` ("jax" or "torch")."""
    pytest.importorskip(backend, reason="install the test extra: pip install -e '.[test]'")
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu"}
    header = f"import keras, numpy as np\nimport keras_mixer\nassert keras.backend.backend() == {backend!r}\n"
    subprocess.run([sys.executable, "-c", header + textwrap.dedent(script)], env=env, check=True, timeout=300)


def run_on_jax(script):
    run_on("jax", script)


def randomized_tiny_mixer():
    model = keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5, gelu="exact",
                                 classifier_activation=None)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model, rng.uniform(-1, 1, (8, 16, 16, 3)).astype("float32")


def test_qat_model_agrees_across_backends_and_trains_on_jax(tmp_path):
    from keras_mixer.quantization import quantize_model

    model, images = randomized_tiny_mixer()
    qat = quantize_model(model, calibration_data=images)
    qat.save(tmp_path / "qat.keras")
    np.save(tmp_path / "images.npy", images)
    run_on_jax(f"""
        from keras_mixer.quantization import quantize_model
        images = np.load({str(tmp_path / 'images.npy')!r})
        qat = keras.models.load_model({str(tmp_path / 'qat.keras')!r})
        np.save({str(tmp_path / 'jax.npy')!r}, qat.predict(images, verbose=0))
        # a fresh model (zero-initialized head) quantized and trained on JAX
        fresh = quantize_model(keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5,
                                                    classifier_activation=None), calibration_data=images)
        fresh.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses = fresh.fit(images, np.arange(8) % 5, epochs=2, batch_size=4, verbose=0).history["loss"]
        assert np.all(np.isfinite(losses)), losses
        assert float(fresh.get_layer("stem").input_quant.updates) == 1 + 4  # calibration + 2 epochs x 2 steps
        """)
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), qat.predict(images, verbose=0), atol=1e-4)




# JAX compiles each successor's training step for 20 s to a minute on 2 cores: by default JAX runs the Mixer (and
# the QAT model below), PyTorch every family; the other families' JAX runs are in the slow set (-m slow)
SLOW_ON_JAX = ("as_mlp", "hire_mlp", "vip", "raft_mlp", "sparse_mlp")


@pytest.mark.parametrize("family, backend", [
    pytest.param(family, backend, marks=[pytest.mark.slow] if backend == "jax" and family in SLOW_ON_JAX else [])
    for backend in ("jax", "torch") for family in TINY
])
def test_every_family_agrees_trains_and_round_trips_on_every_backend(family, backend, tmp_path):
    """Same weights (a non-zero head) -> the TensorFlow backend's outputs; a few fit steps; a .keras round trip."""
    model = TINY[family]()
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    size = model.input_shape[1]
    images = rng.uniform(-1, 1, (4, size, size, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "images.npy", images)
    run_on(backend, f"""
        model = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        images = np.load({str(tmp_path / 'images.npy')!r})
        np.save({str(tmp_path / 'other.npy')!r}, model.predict(images, verbose=0))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(images, np.arange(4) % 5, epochs=2, batch_size=2, verbose=0).history
        assert np.all(np.isfinite(history["loss"])), history
        if {family!r} == "sparse_mlp":  # the experts' auxiliary loss is reported on every backend
            assert all(value > 0 for value in history["aux_loss"]), history
        model.save({str(tmp_path / 'trained.keras')!r})
        again = keras.models.load_model({str(tmp_path / 'trained.keras')!r})
        np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
        """)
    tolerance = 1e-4 if family == "sparse_mlp" else 1e-5  # the router's top-k over near-equal gates
    np.testing.assert_allclose(np.load(tmp_path / "other.npy"), model.predict(images, verbose=0), atol=tolerance)


def test_fused_dense_on_torch_is_keras_dense_forward_and_backward():
    """MlpBlock's Dense runs as one torch linear op: the same outputs and gradients (input, kernel, bias) as Keras'
    Dense with the same weights, on a transposed (non-contiguous) 3-D input as token mixing gives it."""
    run_on("torch", """
        import torch
        from keras_mixer.layers.mlp import FusedDense
        rng = np.random.default_rng(0)
        weights = [rng.normal(size=(5, 6)).astype("float32"), rng.normal(size=6).astype("float32")]
        tokens_first = rng.normal(size=(3, 5, 4)).astype("float32")
        results = []
        for layer in (FusedDense(6), keras.layers.Dense(6)):
            layer.build((None, 5))
            layer.set_weights(weights)
            x = torch.tensor(tokens_first, requires_grad=True)
            y = layer(x.transpose(1, 2))
            (y * torch.arange(6.0)).sum().backward()
            results.append([y.detach().numpy(), x.grad.numpy()] + [v.value.grad.numpy() for v in layer.weights])
        assert not np.allclose(results[0][0], 0)
        for got, expected in zip(*results):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        """)


def test_stochastic_depth_and_router_noise_on_torch_draw_keras_values_from_a_host_seed_state():
    """On torch, DropPath's masks and the experts' router noise come from a seed state kept on the host (so a GPU
    step is not synced per draw): the same values, and the same seed states after each draw, as keras.random with a
    SeedGenerator of the same seed."""
    run_on("torch", """
        import torch
        from keras_mixer.layers import DropPath
        from keras_mixer.layers import host_seeds
        layer, reference = DropPath(0.3, seed=5), keras.random.SeedGenerator(5)
        assert layer.seed_generator.state.value.device.type == "cpu"
        x = torch.ones((64, 3, 4))
        dropped = 0
        for _ in range(3):
            got = layer(x, training=True)
            kept = keras.random.uniform((64, 1, 1), seed=reference, dtype="float32") < 0.7
            assert torch.equal(got, x / 0.7 * kept.float())
            np.testing.assert_array_equal(layer.seed_generator.state.numpy(), reference.state.numpy())
            dropped += int((got[:, 0, 0] == 0).sum())
        assert 0 < dropped < 3 * 64  # masks that drop some samples and keep others
        noise, reference = host_seeds.seed_generator(7), keras.random.SeedGenerator(7)
        assert torch.equal(host_seeds.normal((4, 6), noise, like=torch.zeros(1)),
                           keras.random.normal((4, 6), seed=reference))
        """)


def test_torch_fit_fed_by_the_feeder_thread_trains_as_from_keras_own_conversion():
    """The trainer's CUDA feed hands Keras on torch tensors placed by a feeder thread (`feed.ahead`; the pinned
    copies themselves need a GPU): fit takes them in order and trains to the same weights as from NumPy batches,
    which Keras converts itself."""
    run_on("torch", """
        import torch
        from keras_mixer.training.feed import ahead, with_pixel_input

        rng = np.random.default_rng(0)
        batches = [(rng.integers(0, 256, (4, 16, 16, 3)).astype("uint8"),
                    np.eye(5, dtype="float32")[rng.integers(0, 5, 4)]) for _ in range(6)]

        def trained(source):
            keras.utils.set_random_seed(0)
            model = keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5)
            initial = [keras.ops.convert_to_numpy(v) for v in model.weights]
            trainee = with_pixel_input(model)
            trainee.compile(keras.optimizers.AdamW(1e-2), "categorical_crossentropy")
            trainee.fit(source, steps_per_epoch=6, epochs=1, verbose=0)
            return initial, [keras.ops.convert_to_numpy(v) for v in model.weights]

        initial, from_numpy = trained(batch for batch in batches)  # Keras takes a generator, not an iterator
        _, from_thread = trained(ahead(iter(batches), lambda batch: tuple(map(torch.from_numpy, batch)), depth=2))
        assert all(not np.array_equal(a, b) for a, b in zip(initial, from_numpy) if a.std() or b.std())
        for a, b in zip(from_numpy, from_thread):
            np.testing.assert_array_equal(a, b)
        reversed_order = ahead(iter(batches[::-1]), lambda batch: tuple(map(torch.from_numpy, batch)), depth=2)
        assert any(not np.array_equal(a, b) for a, b in zip(from_numpy, trained(reversed_order)[1]))
    """)


def test_a_torch_training_step_reads_back_from_the_device_only_where_keras_torch_optimizers_must():
    """Eager torch keeps a GPU busy only while the host never waits for it, and every read of a device value back
    into Python (`float(t)`, `if t:`) is such a wait. The recipes' schedules choose warmup or decay on the device
    (Keras' CosineDecay read its choice back, twice per AdamW step): the AdamW presets read nothing back but the
    host seed states (`host_seeds`). What remains is Keras': its torch SGD takes the learning rate as a Python
    number every step, and gradient accumulation picks the update step with a Python `if`."""
    run_on("torch", """
        import os
        import traceback
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from keras_mixer.training.recipe import compile_model, get_recipe

        def op_machinery(path):
            return "site-packages/torch/" in path or "keras/src/ops/" in path or "keras/src/utils/" in path or (
                "keras/src/backend/torch/" in path and "/optimizers/" not in path)

        class Reads(TorchDispatchMode):
            # the file that reads a value back: the innermost one that is not torch or Keras' ops and their wrappers
            def __init__(self):
                super().__init__()
                self.files = set()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
                    caller = [f.filename for f in traceback.extract_stack()[:-1] if not op_machinery(f.filename)][-1]
                    self.files.add(os.path.basename(caller))
                return func(*args, **(kwargs or {}))

        x = np.random.default_rng(0).uniform(0, 1, (8, 16, 16, 3)).astype("float32")
        y = np.eye(5, dtype="float32")[np.arange(8) % 5]
        expected_reads = {
            ("digits", 1): {"host_seeds.py"},  # AdamW, cosine, stochastic depth
            ("scratch", 1): {"host_seeds.py"},  # AdamW, linear, stochastic depth
            ("qat", 1): set(),  # AdamW, cosine
            ("finetune", 1): {"torch_sgd.py"},  # SGD, cosine
            ("finetune", 2): {"torch_sgd.py", "base_optimizer.py"},
        }
        for (name, accumulation), expected in expected_reads.items():
            recipe = get_recipe(name, warmup_steps=4, accumulation_steps=accumulation)
            model = keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5,
                                         drop_path_rate=recipe.drop_path_rate, classifier_activation=None)
            compile_model(model, recipe, total_steps=100, global_batch_size=8)
            model.train_on_batch(x, y)
            reads = Reads()
            with reads:
                for _ in range(5):  # through the warmup's end
                    model.train_on_batch(x, y)
            assert reads.files == expected, (name, accumulation, reads.files)
    """)
