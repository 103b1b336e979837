"""Released checkpoints: (variant, tag) -> where the file is and how it was trained. Each family's module declares
its own releases beside the model and registers them here (`register_releases`).

Hashes: timm file names carry a sha256 prefix (checked like torch.hub does); Google and the Hire-MLP authors publish
none, so those files are fetched unverified (a warning says so).
"""

import dataclasses
import os

from keras_mixer.errors import WeightsError
from keras_mixer.io_utils import folder_given_as_model
from keras_mixer.layers.input_normalization import INCEPTION
from keras_mixer.weights.formats import WEIGHT_FILE_SUFFIXES


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
    variant: str
    tag: str
    url: str
    file_hash: str | None  # full sha256 or a prefix; None when upstream publishes none
    gelu: str  # the GELU form the checkpoint was trained with
    classes: int
    top1: float | None = None  # published ImageNet-1k top-1 at 224 (timm's evaluation), where known
    # (mean, std) on [0, 1] pixels the checkpoint was trained and evaluated on; the builders map
    # preprocess_input's [-1, 1] onto it inside the model (see keras_mixer/layers/input_normalization.py)
    normalization: tuple = INCEPTION

    @property
    def filename(self):
        return f"{self.variant}.{self.tag}." + self.url.rsplit(".", 1)[-1]


# (variant, tag) -> PretrainedWeights, and variant -> the tag "imagenet" stands for: filled by each family's module
# (its releases beside the model, as timm's pretrained configs), through `register_releases`
PRETRAINED = {}
IMAGENET_ALIAS = {}


def register_releases(releases, imagenet=None):
    """Adds a family's `releases` (PretrainedWeights) and its "imagenet" aliases ({variant: tag})."""
    for release in releases:
        key = (release.variant, release.tag)
        if key in PRETRAINED:
            raise WeightsError(f"release {key} is registered twice")
        PRETRAINED[key] = release
    for variant, tag in (imagenet or {}).items():
        if (variant, tag) not in PRETRAINED:
            raise WeightsError(f"'imagenet' for {variant} names {tag!r}, which is not one of its releases")
        IMAGENET_ALIAS[variant] = tag


def list_pretrained(variant=None):
    """Tags available for `variant` (or every (variant, tag) pair), 'imagenet' aliases included."""
    pairs = sorted(PRETRAINED) + sorted((v, "imagenet") for v in IMAGENET_ALIAS)
    return [tag for v, tag in pairs if v == variant] if variant else pairs


def resolve(variant, tag):
    """The release for `tag` of `variant`, following the 'imagenet' alias."""
    key = (variant, IMAGENET_ALIAS.get(variant) if tag == "imagenet" else tag)
    if key in PRETRAINED:  # a release's tag, even where a folder of that name is at hand (an "imagenet/" of data)
        return PRETRAINED[key]
    if isinstance(tag, (str, os.PathLike)) and os.path.isdir(tag):
        # a Hugging Face Hub snapshot's folder, say: the checkpoint file inside it is the weights
        raise WeightsError(folder_given_as_model(os.fspath(tag), WEIGHT_FILE_SUFFIXES, "weights file"))
    if variant is None:
        raise WeightsError(
            f"weights={tag!r} names a pretrained release, but this model's config matches no released variant; "
            "pass a local checkpoint path instead"
        )
    raise WeightsError(
        f"no pretrained weights {tag!r} for {variant}; available: {', '.join(list_pretrained(variant)) or 'none'}; "
        f"a local file must end in {', '.join(WEIGHT_FILE_SUFFIXES[:-1])} or {WEIGHT_FILE_SUFFIXES[-1]}"
    )
