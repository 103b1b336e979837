"""`local_textures`: a tfds image-classification builder whose data is "downloaded" by tfds' own download manager
from a URL the test serves on 127.0.0.1 (a zip of `train/` and `val/` class folders, see image_folders.py)."""

import os

import tensorflow_datasets as tfds

from image_folders import CLASSES


class LocalTextures(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    URL = None  # set by the test to the served zip

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(CLASSES)),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        root = dl_manager.download_and_extract(self.URL)
        return {"train": self._generate_examples(root / "train"), "validation": self._generate_examples(root / "val")}

    def _generate_examples(self, folder):
        for label in CLASSES:
            for name in sorted(os.listdir(folder / label)):
                yield f"{label}/{name}", {"image": os.fspath(folder / label / name), "label": label}
