"""Training input pipelines side by side on one folder of JPEGs: ours (`make_pipeline`, tf.data) against timm's
(`create_transform` + `ImageDataset` + a torch DataLoader with one worker per core, mixup on the batch as its
training loop does), for each recipe: the fine-tuning one (Inception crop + flip) and the official from-scratch one
(+ RandAugment(2, 15) + mixup 0.5). Images/s after warm-up, and per core. Without `--folder` it writes `--images`
random-noise JPEGs of ImageNet's typical size (500x375) to a temporary folder, in 10 classes.

    python benchmarks/input_pipeline.py --images 800 --batches 12 --output docs/results/input_pipeline.json
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

RECIPES = {  # name: (our recipe, timm's create_transform options, timm's mixup alpha)
    "finetune (crop + flip)": ("finetune", {"auto_augment": None}, 0.0),
    "scratch (crop + flip + RandAugment(2, 15) + mixup 0.5)": ("scratch", {"auto_augment": "rand-m15-n2"}, 0.5),
}


def write_folder(root, count, size=(500, 375), classes=10, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = Path(root) / f"class_{index % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        # smooth noise: compresses like a photo (a few tens of KB), unlike white noise
        small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3)).astype("uint8")
        Image.fromarray(small).resize(size, Image.BILINEAR).save(folder / f"{index}.jpg", quality=90)
    return root


def ours(folder, recipe_name, batch_size, batches):
    from keras_mixer.training import get_recipe, load_source, make_pipeline

    source = load_source(str(folder), "train")
    stream = iter(make_pipeline(source, 224, batch_size, get_recipe(RECIPES[recipe_name][0]), training=True))
    for _ in range(2):  # warm-up: tracing, the first reads
        next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        images, labels = next(stream)
        images.numpy()
    return batches * batch_size / (time.perf_counter() - started)


def timm_loader(folder, recipe_name, batch_size, batches, workers):
    import timm.data
    import torch

    _, options, mixup_alpha = RECIPES[recipe_name]
    transform = timm.data.create_transform(224, is_training=True, interpolation="bilinear", **options)
    dataset = timm.data.ImageDataset(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=True)
    mixup = timm.data.Mixup(mixup_alpha=mixup_alpha, num_classes=10) if mixup_alpha else None
    stream = iter(_forever(loader))
    for _ in range(2):
        next(stream)
    started = time.perf_counter()
    for _ in range(batches):
        images, labels = next(stream)
        if mixup is not None:
            images, labels = mixup(images, labels)
    return batches * batch_size / (time.perf_counter() - started)


def _forever(loader):
    while True:
        yield from loader


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="a folder with one sub-folder per class (default: write random JPEGs)")
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--output", help="a JSON file for the rows, the machine and the command")
    args = parser.parse_args()
    # timm first: torchvision's native ops crash the process when loaded after TensorFlow (tests/conftest.py)
    import timm.data  # noqa: F401

    cores = os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.folder or write_folder(scratch, args.images)
        for recipe in RECIPES:
            for pipeline in ("keras_mixer", "timm"):
                rate = (ours(folder, recipe, args.batch_size, args.batches) if pipeline == "keras_mixer" else
                        timm_loader(folder, recipe, args.batch_size, args.batches, workers=cores))
                rows.append({"recipe": recipe, "pipeline": pipeline, "images_per_s": rate,
                             "images_per_s_per_core": rate / cores})
                print(f"{recipe:<58}{pipeline:<13}{rate:8.0f} images/s  {rate / cores:6.0f} per core", flush=True)
    if args.output:
        from keras_mixer.machine import machine
        from keras_mixer.io_utils import write_text

        command = "python benchmarks/input_pipeline.py " + " ".join(sys.argv[1:])
        write_text(args.output, json.dumps({"machine": machine(), "command": command, "batch_size": args.batch_size,
                                            "batches": args.batches, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
