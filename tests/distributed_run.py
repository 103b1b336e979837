"""Subprocess entry points for the distribution tests (tf.distribute must be configured before TensorFlow starts).

    python distributed_run.py mirrored OUT.npz
        trains the digits Mixer 6 steps on one device and, from the same initial weights, with MirroredStrategy over
        2 logical CPUs, same global batch; saves both final weight lists.
"""

import sys


def mirrored(out):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from keras_mixer.models.mlp_mixer import build_digits_mixer
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


if __name__ == "__main__":
    mirrored(sys.argv[2])
