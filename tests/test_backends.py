"""The same saved model gives the same output on the TensorFlow and JAX backends."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras_mixer

pytestmark = pytest.mark.backends


def test_tensorflow_and_jax_agree(tmp_path):
    pytest.importorskip("jax", reason="install the test extra: pip install -e '.[test]'")
    model = keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5, gelu="exact")
    rng = np.random.default_rng(0)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "tf.npy", model.predict(images, verbose=0))

    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import keras_mixer  # registers the layers
        assert keras.backend.backend() == "jax"
        model = keras.models.load_model({str(tmp_path / 'm.keras')!r})
        np.save({str(tmp_path / 'jax.npy')!r}, model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0))
        """
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), np.load(tmp_path / "tf.npy"), atol=1e-5)
