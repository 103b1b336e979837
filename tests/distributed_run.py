"""Subprocess entry points for the distribution tests (tf.distribute must be configured before TensorFlow starts).

    python distributed_run.py mirrored OUT.npz
        trains the digits Mixer 6 steps on one device and, from the same initial weights, with MirroredStrategy over
        2 logical CPUs, same global batch; saves both final weight lists.
    python distributed_run.py worker INDEX PORT0 PORT1 RUN_DIR OUT.npz
        one worker of a 2-worker MultiWorkerMirroredStrategy run of `keras_mixer.training.train` on 127.0.0.1.
"""

import json
import os
import sys


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from keras_mixer.demo import build_digits_mixer
    from keras_mixer.training import compile_model, get_distribution, get_recipe, load_source, make_pipeline

    recipe = get_recipe("digits", drop_path_rate=0.0)
    source = load_source("digits", "train")
    keras.utils.set_random_seed(0)
    initial = build_digits_mixer().get_weights()
    arrays = {}
    for name in ("default", "mirrored"):
        distribution = get_distribution(name)
        with distribution.scope():
            model = build_digits_mixer()
            model.set_weights(initial)
            compile_model(model, recipe, total_steps=60, global_batch_size=32)
        model.fit(make_pipeline(source, 32, 32, recipe, training=True), steps_per_epoch=6, epochs=1, verbose=0)
        arrays.update({f"{name}_{i}": w for i, w in enumerate(model.get_weights())})
        arrays[f"{name}_replicas"] = np.array(distribution.num_replicas)
    arrays.update({f"initial_{i}": w for i, w in enumerate(initial)})
    np.savez(out, **arrays)


def worker(index, port0, port1, run_dir, out):
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port0}", f"127.0.0.1:{port1}"]},
        "task": {"type": "worker", "index": int(index)},
    })
    import numpy as np

    from keras_mixer.training import train

    model, report = train(dataset="digits", output_dir=run_dir, epochs=1, strategy="multi_worker", verbose=0)
    np.savez(out, replicas=report["replicas"], steps=report["steps"],
             **{str(i): w for i, w in enumerate(model.get_weights())})


if __name__ == "__main__":
    {"mirrored": mirrored, "worker": worker}[sys.argv[1]](*sys.argv[2:])
