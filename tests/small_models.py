"""Small models of every family, and non-zero weights for them.

A fresh Mixer's head is zero-initialized, so every logit is 0 and a graph that drops whole blocks would still
"match" (Sparse-MLP's experts once vanished so): tests comparing two graphs give the head and every norm values."""

import keras_mixer
import numpy as np

# digits-sized models exercising every layer of each family: Hire-MLP's shifted blocks (step > 0) and circular
# padding (a 5-row map with pixel 3), ViP's transition and segment widths, RaftMLP's two embedding kernels
SMALL = {
    "mixer": lambda: keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=5),
    "as_mlp": lambda: keras_mixer.ASMLP(8, (1, 1, 1, 1), input_shape=(32, 32, 3), classes=5),
    "hire_mlp": lambda: keras_mixer.HireMLP((1, 2, 1, 1), (16, 32, 32, 64), input_shape=(80, 80, 3), classes=5),
    "vip": lambda: keras_mixer.VisionPermutator((1, 1, 1, 1), (16, 32, 32, 32), (True, False, False, False),
                                                (8, 4, 4, 4), patch_size=4, input_shape=(32, 32, 3), classes=5),
    "raft_mlp": lambda: keras_mixer.RaftMLP(
        [dict(depth=1, dim=8, patch_size=4, raft_size=2, embedding_kernels=(4, 8)),
         dict(depth=1, dim=16, patch_size=2, raft_size=2, embedding_kernels=(2, 4))],
        input_shape=(32, 48, 3), classes=5),
}


def with_nonzero_weights(model, seed=1):
    """The head and every norm's affine / BatchNorm statistic set to random values (see the module doc)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        name = variable.path.rsplit("/", 1)[-1]
        if "head" in variable.path or name in ("bias", "beta", "moving_mean") and "norm" in variable.path:
            variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
        elif name in ("scale", "gamma", "moving_variance"):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))
    return model
