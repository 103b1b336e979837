"""Writes .keras files with the code of an earlier version, and the outputs they gave: how the files beside this
script were made, from a checkout of commit 8201816 (before the layer, registry and export refactors):

    git worktree add /tmp/old 8201816 && cd /tmp/old && PYTHONPATH=. python make_files.py OUT_DIR

tests/test_saving.py loads each with the current code and compares the outputs."""
import sys
from pathlib import Path
import numpy as np
import keras
import keras_mixer
from keras_mixer.models.raft_mlp import _levels
from keras_mixer.quantization import quantize_model

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
models = {
    "mixer": keras_mixer.MLPMixer(patch_size=8, hidden_dim=16, num_blocks=2, tokens_mlp_dim=8, channels_mlp_dim=32,
                                  input_shape=(32, 32, 3), classes=5),
    "hire_mlp": keras_mixer.HireMLP(layers=(1, 1, 1, 1), embed_dims=(8, 16, 24, 32), input_shape=(32, 32, 3), classes=5),
    "as_mlp": keras_mixer.ASMLP(embed_dim=8, depths=(1, 1, 1, 1), input_shape=(32, 32, 3), classes=5),
    "vip": keras_mixer.VisionPermutator(patch_size=4, layers=(1, 1), embed_dims=(16, 16), segment_dim=(8, 8),
                                        transitions=(False, False), input_shape=(32, 32, 3), classes=5),
    "raft_mlp": keras_mixer.RaftMLP(layers=_levels((8, 16, 24, 32)), input_shape=(32, 32, 3), classes=5),
    "sparse_mlp": keras_mixer.SparseMLP(patch_size=8, hidden_dim=16, num_blocks=3, tokens_mlp_dim=8, channels_mlp_dim=32,
                                        num_sparse_blocks=1, token_experts=2, channel_experts=2,
                                        input_shape=(32, 32, 3), classes=5),
}
for name, model in models.items():
    rng = np.random.default_rng(1)
    for v in model.weights:  # not the initial values: a zero head makes every output alike
        if v.dtype == "float32" and "moving" not in v.path:
            v.assign(v + rng.normal(scale=0.05, size=v.shape).astype("float32"))
models["mixer_qat"] = quantize_model(models["mixer"], calibration_data=x)  # the float weights given values above
for name, model in models.items():
    model.save(out / f"{name}.keras")
    np.save(out / f"{name}_outputs.npy", keras.ops.convert_to_numpy(model(x, training=False)))
np.save(out / "inputs.npy", x)
print(sorted(p.name for p in out.iterdir()))
