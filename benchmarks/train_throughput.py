"""Images/s of one training step (forward + backward + AdamW update, the digits/scratch recipe objects) for a
registered model on this machine, on the TensorFlow and JAX backends side by side (each in its own process).
Random data; compiled train step (`model.fit` on a repeated batch), warm-up excluded.

    python benchmarks/train_throughput.py mixer_s16 --batch-size 32 --steps 10
"""

import argparse
import json
import os
import subprocess
import sys
import time


def measure(model_name, batch_size, steps, image_size):
    import keras
    import numpy as np

    from keras_mixer.models import create_model
    from keras_mixer.training import compile_model, get_recipe

    model = create_model(model_name, input_shape=(image_size, image_size, 3), classifier_activation=None,
                         drop_path_rate=0.1)
    compile_model(model, get_recipe("scratch", loss="softmax"), total_steps=10_000, global_batch_size=batch_size)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = np.eye(1000, dtype="float32")[rng.integers(0, 1000, batch_size)]
    model.fit(images, labels, batch_size=batch_size, epochs=2, verbose=0)  # trace + warm-up
    repeated_images, repeated_labels = np.repeat(images, steps, 0), np.repeat(labels, steps, 0)
    started = time.perf_counter()
    model.fit(repeated_images, repeated_labels, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    return {"backend": keras.backend.backend(), "images_per_second": steps * batch_size / seconds,
            "ms_per_step": 1000 * seconds / steps}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="mixer_s16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.batch_size, args.steps, args.image_size)))
        return
    print(f"{args.model}, batch {args.batch_size}, {args.image_size}x{args.image_size}, {os.cpu_count()} CPU cores")
    for backend in args.backends:
        command = [sys.executable, __file__, args.model, "--child", "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--image-size", str(args.image_size)]
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode:
            print(f"{backend:<12} failed: {result.stderr.strip().splitlines()[-1]}")
            continue
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{backend:<12}{row['images_per_second']:>8.1f} images/s {row['ms_per_step']:>9.0f} ms/step")


if __name__ == "__main__":
    main()
