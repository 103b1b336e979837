"""The same saved model gives the same output on the TensorFlow and JAX backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_mixer

pytestmark = pytest.mark.backends


def run_on_jax(script):
    pytest.importorskip("jax", reason="install the test extra: pip install -e '.[test]'")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    header = "import keras, numpy as np\nimport keras_mixer\nassert keras.backend.backend() == 'jax'\n"
    subprocess.run([sys.executable, "-c", header + textwrap.dedent(script)], env=env, check=True, timeout=300)


def randomized_tiny_mixer():
    model = keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5, gelu="exact",
                                 classifier_activation=None)
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    return model, rng.uniform(-1, 1, (8, 16, 16, 3)).astype("float32")


def test_tensorflow_and_jax_agree(tmp_path):
    model, images = randomized_tiny_mixer()
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "images.npy", images)
    run_on_jax(f"""
        model = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        np.save({str(tmp_path / 'jax.npy')!r}, model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))
        """)
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), model.predict(images, verbose=0), atol=1e-5)


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


SEED_FAMILIES = {
    "vip": lambda: keras_mixer.VisionPermutator((1, 1), (8, 16), (True, False), (8, 4), (3, 3), patch_size=2,
                                                input_shape=(16, 16, 3), classes=5, classifier_activation=None),
    "raft_mlp": lambda: keras_mixer.RaftMLP(
        ({"depth": 1, "dim": 8, "patch_size": 4, "raft_size": 2, "embedding_kernels": (4, 8)},),
        input_shape=(16, 16, 3), classes=5, classifier_activation=None),
    "sparse_mlp": lambda: keras_mixer.SparseMLP(4, 8, 2, 6, 12, num_sparse_blocks=1, min_capacity=1,
                                                input_shape=(16, 16, 3), classes=5, classifier_activation=None),
}


@pytest.mark.parametrize("family", SEED_FAMILIES)
def test_seed_families_agree_across_backends(family, tmp_path):
    model = SEED_FAMILIES[family]()
    rng = np.random.default_rng(0)
    for variable in model.trainable_weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    images = rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "images.npy", images)
    run_on_jax(f"""
        model = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        images = np.load({str(tmp_path / 'images.npy')!r})
        np.save({str(tmp_path / 'jax.npy')!r}, model.predict(images, verbose=0))
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(images, np.arange(4) % 5, epochs=2, batch_size=2, verbose=0).history
        assert np.all(np.isfinite(history["loss"])), history
        if {family!r} == "sparse_mlp":  # the experts' auxiliary loss is reported on JAX too
            assert all(value > 0 for value in history["aux_loss"]), history
        """)
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), model.predict(images, verbose=0), atol=1e-4)
