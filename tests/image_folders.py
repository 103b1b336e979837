"""A class-folder image dataset of our own (not digits): three textures (horizontal stripes, vertical stripes, a
checkerboard) in random colours, periods and phases, on non-square images of mixed sizes, saved as PNG and JPEG
in `train/` and `val/` (or flat class folders), as a user's photo folder would be laid out."""

import numpy as np
from PIL import Image

CLASSES = ("checkerboard", "horizontal_stripes", "vertical_stripes")


def texture(kind, height, width, rng):
    period = max(int(min(height, width) / rng.uniform(3, 5)), 4)  # 3-5 periods across: clear at 32x32 too
    phase_y, phase_x = rng.integers(0, period, size=2)
    rows = ((np.arange(height)[:, None] + phase_y) // (period // 2)) % 2
    cols = ((np.arange(width)[None, :] + phase_x) // (period // 2)) % 2
    pattern = {"horizontal_stripes": rows + 0 * cols, "vertical_stripes": cols + 0 * rows,
               "checkerboard": (rows + cols) % 2}[kind]
    colors = rng.integers(0, 256, size=(2, 3))
    while np.abs(colors[0].astype(int) - colors[1]).sum() < 150:  # keep the two colours apart
        colors = rng.integers(0, 256, size=(2, 3))
    image = colors[pattern].astype(np.float32) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_image_folders(root, per_class=100, val_fraction=0.2, split_folders=True, seed=0):
    """Writes `per_class` images per class under root (train/ and val/ if split_folders); returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for kind in CLASSES:
        for index in range(per_class):
            subset = ("val" if index < per_class * val_fraction else "train") if split_folders else ""
            folder = root / subset / kind
            folder.mkdir(parents=True, exist_ok=True)
            height, width = int(rng.integers(40, 100)), int(rng.integers(40, 100))
            while height == width:
                width = int(rng.integers(40, 100))
            image = Image.fromarray(texture(kind, height, width, rng))
            if index % 2:
                path = folder / f"{index:03d}.jpg"
                image.save(path, quality=90)
            else:
                path = folder / f"{index:03d}.png"
                image.save(path)
            paths.append(path)
    return paths
