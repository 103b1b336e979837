"""Where a training step's time goes, Keras on the torch backend against timm: both in one process on the same
torch, one Keras step and one timm step taken in turn (so the VM's drift hits both alike), each split into forward,
backward (loss included) and optimizer (global-norm clipping + AdamW update; Keras' metrics too). Both compute the
same function (`--gelu`, as in train_throughput.py). Medians over the steps, and timm's step time over Keras' (> 1:
Keras is faster).

    KERAS_BACKEND=torch python benchmarks/train_step_phases.py mixer_s32 --gelu tanh --steps 10 \
        --output docs/results/train_step_phases.json
"""

import argparse
import os
import statistics
import sys
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="mixer_s32")
    parser.add_argument("--gelu", choices=["tanh", "exact"], default="tanh")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--output", help="a JSON file of runs to add this one to (train_throughput.add_run)")
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND") != "torch":
        parser.error("run with KERAS_BACKEND=torch: this compares Keras on torch with timm on the same torch")

    import numpy as np
    import torch

    sys.path.insert(0, os.path.dirname(__file__))
    from train_throughput import add_run, timm_reference

    from keras_mixer.models import create_model
    from keras_mixer.training import compile_model, get_recipe

    size, batch = args.image_size, args.batch_size
    model = create_model(args.model, input_shape=(size, size, 3), classifier_activation=None, drop_path_rate=0.1,
                         gelu=args.gelu)
    compile_model(model, get_recipe("scratch", loss="softmax"), total_steps=10_000, global_batch_size=batch)
    reference, optimizer = timm_reference(args.model, size, args.gelu)

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"))
    classes = torch.from_numpy(rng.integers(0, 1000, batch))
    one_hot = torch.nn.functional.one_hot(classes, 1000).float()
    images_nchw = images.permute(0, 3, 1, 2).contiguous()

    def keras_step():  # the phases of Keras' own torch train_step
        started = time.perf_counter()
        logits = model(images, training=True)
        forward = time.perf_counter()
        model.zero_grad()
        model.compute_loss(x=images, y=one_hot, y_pred=logits, training=True).backward()
        backward = time.perf_counter()
        variables = model.trainable_weights[:]
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in variables], variables)
        model.compute_metrics(images, one_hot, logits, None)
        return forward - started, backward - forward, time.perf_counter() - backward

    def timm_step():
        started = time.perf_counter()
        logits = reference(images_nchw)
        forward = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(logits, classes).backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
        optimizer.step()
        return forward - started, backward - forward, time.perf_counter() - backward

    for _ in range(2):  # warm-up
        keras_step(), timm_step()
    times = {"keras": [], "timm": []}
    for _ in range(args.steps):
        times["keras"].append(keras_step())
        times["timm"].append(timm_step())
    print(f"{args.model}, gelu {args.gelu}, batch {batch}, {size}x{size}, {torch.get_num_threads()} threads, "
          f"median ms of {args.steps} interleaved steps")
    print(f"{'':<14}{'forward':>9}{'backward':>10}{'optimizer':>11}{'step':>8}")
    medians, phases_ms = {}, {}
    for name, phases in times.items():
        columns = [statistics.median(1000 * p[i] for p in phases) for i in range(3)]
        phases_ms[name] = dict(zip(("forward", "backward", "optimizer"), columns))
        medians[name] = statistics.median(1000 * sum(p) for p in phases)
        print(f"{'Keras (torch)' if name == 'keras' else 'timm':<14}" + "".join(
            f"{value:>{width}.0f}" for value, width in zip(columns + [medians[name]], (9, 10, 11, 8))))
    print(f"timm step / Keras step: {medians['timm'] / medians['keras']:.2f}x")
    if args.output:
        add_run(args.output, {"model": args.model, "gelu": args.gelu, "batch_size": batch, "image_size": size,
                              "steps": args.steps, "phases_ms": phases_ms, "step_ms": medians})


if __name__ == "__main__":
    main()
