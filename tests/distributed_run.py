"""Subprocess entry points for the distribution tests (tf.distribute must be configured before TensorFlow starts).

    python distributed_run.py mirrored OUT.npz
        trains the digits Mixer 6 steps on one device and, from the same initial weights, with MirroredStrategy over
        2 logical CPUs, same global batch; saves both final weight lists.
    python distributed_run.py data_parallel OUT.npz   (KERAS_BACKEND=jax, XLA_FLAGS forcing N host devices)
        `train` of the digits Mixer 4 steps with strategy "default" and "data_parallel" from the same initial
        weights; saves both final weight lists and the per-device batch shapes each compiled training step saw.
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
        stream = make_pipeline(source, 32, 32, recipe, training=True, deterministic=True)  # same batches for both
        model.fit(stream, steps_per_epoch=6, epochs=1, verbose=0)
        arrays.update({f"{name}_{i}": w for i, w in enumerate(model.get_weights())})
        arrays[f"{name}_replicas"] = np.array(distribution.num_replicas)
    arrays.update({f"initial_{i}": w for i, w in enumerate(initial)})
    np.savez(out, **arrays)


def data_parallel(out):
    import tempfile

    import jax
    import keras
    import numpy as np

    from keras_mixer.models.mlp_mixer import build_digits_mixer
    from keras_mixer.training import train

    class ShardProbe(keras.layers.Layer):
        """Records the shape of the shard of its input that each device holds, in the compiled step."""

        def call(self, images, training=None):
            if training:
                jax.debug.inspect_array_sharding(images, callback=lambda s: shards.add(s.shard_shape(images.shape)))
            return images

    keras.utils.set_random_seed(0)
    initial = build_digits_mixer(drop_path_rate=0.0).get_weights()

    def probed_mixer():
        mixer = build_digits_mixer(drop_path_rate=0.0)
        mixer.set_weights(initial)
        images = keras.Input(mixer.input_shape[1:])
        return keras.Model(images, mixer(ShardProbe()(images)), name="probed_mixer")

    arrays = {f"initial_{i}": w for i, w in enumerate(initial)}
    for name in ("default", "data_parallel"):
        shards = set()
        with tempfile.TemporaryDirectory() as scratch:
            model, report = train(probed_mixer, output_dir=scratch, steps=4, checkpoint_every=2, batch_size=32,
                                  strategy=name, deterministic=True, drop_path_rate=0.0, verbose=0)
        arrays.update({f"{name}_{i}": w for i, w in enumerate(model.get_weights())})
        arrays[f"{name}_replicas"] = np.array(report["replicas"])
        arrays[f"{name}_shards"] = np.array(sorted(shards))
        arrays[f"{name}_eval_examples"] = np.array(report["eval_examples"])
    np.savez(out, **arrays)


if __name__ == "__main__":
    {"mirrored": mirrored, "data_parallel": data_parallel}[sys.argv[1]](sys.argv[2])
