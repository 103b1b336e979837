"""Released Mixer checkpoints: (variant, tag) -> where the file is and how it was trained.

Official `.npz` files come from the vit_jax release (gs://mixer_models); `.pth` files from timm's releases and, for
Hire-MLP, from its authors' release.
Hashes: timm file names carry a sha256 prefix (checked like torch.hub does); Google publishes no hash for the
`.npz` files, so those are fetched unverified (a warning says so).
"""

import dataclasses

from keras_mixer.errors import WeightsError
from keras_mixer.layers.input_normalization import IMAGENET_DEFAULT, INCEPTION, UNIT_RANGE

GOOGLE = "https://storage.googleapis.com/mixer_models"
TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
# Hire-MLP's authors publish their ImageNet-1k training checkpoints (model state_dict beside optimizer state and the
# run's argparse.Namespace) as release assets, without hashes
HIRE_MLP = "https://github.com/ggjy/Hire-Wave-MLP.pytorch/releases/download/log"


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


def _official(variant, tag, folder, classes=1000, top1=None):
    name = {"mixer_s8": "S_8", "mixer_s16": "S_16", "mixer_s32": "S_32", "mixer_b16": "B_16",
            "mixer_b32": "B_32", "mixer_l16": "L_16"}[variant]
    return PretrainedWeights(variant, tag, f"{GOOGLE}/{folder}/Mixer-{name}.npz", None, "tanh", classes, top1)


_RELEASES = [
    # Google's official .npz (tanh GELU, inputs in [-1, 1]: big_vision's value_range(-1, 1)).
    _official("mixer_b16", "imagenet1k", "imagenet1k", top1=76.616),
    _official("mixer_l16", "imagenet1k", "imagenet1k", top1=72.084),
    _official("mixer_b16", "imagenet21k", "imagenet21k", classes=21843),
    _official("mixer_l16", "imagenet21k", "imagenet21k", classes=21843),
    _official("mixer_b16", "sam", "sam"),
    _official("mixer_b32", "sam", "sam"),
    *(_official(v, "gsam", "gsam") for v in ("mixer_s8", "mixer_s16", "mixer_s32", "mixer_b16", "mixer_b32")),
    # timm's PyTorch conversions (exact-erf GELU in timm, but converted from the tanh-trained JAX weights; timm's
    # config for them: mean = std = 0.5, i.e. [-1, 1]).
    PretrainedWeights("mixer_b16", "goog_in21k_ft_in1k", f"{TIMM}/v0.1-vitjx/jx_mixer_b16_224-76587d61.pth",
                      "76587d61", "tanh", 1000, 76.616),
    PretrainedWeights("mixer_l16", "goog_in21k_ft_in1k", f"{TIMM}/v0.1-vitjx/jx_mixer_l16_224-92f9adc4.pth",
                      "92f9adc4", "tanh", 1000, 72.084),
    PretrainedWeights("mixer_b16", "goog_in21k", f"{TIMM}/v0.1-vitjx/jx_mixer_b16_224_in21k-617b3de2.pth",
                      "617b3de2", "tanh", 21843),
    PretrainedWeights("mixer_l16", "goog_in21k", f"{TIMM}/v0.1-vitjx/jx_mixer_l16_224_in21k-846aa33c.pth",
                      "846aa33c", "tanh", 21843),
    # Alibaba MIIL's ImageNet-21k-P pre-training, fine-tuned on 1k; trained on [0, 1] inputs (timm's config: mean 0,
    # std 1) with exact GELU.
    PretrainedWeights("mixer_b16", "miil_in21k_ft_in1k", f"{TIMM}/v0.1-tresnet/mixer_b16_224_miil-9229a591.pth",
                      "9229a591", "exact", 1000, 82.314, normalization=UNIT_RANGE),
    # Hire-MLP (paper top-1 at 224, ImageNet-1k from scratch), trained and evaluated on timm's ImageNet mean / std
    # (the authors' mlp_based/hire_mlp.py default_cfg and datasets.py transforms)
    *(PretrainedWeights(f"hire_mlp_{size}", "imagenet1k", f"{HIRE_MLP}/hire_mlp_{size}.pth", None, "exact", 1000, top1,
                        normalization=IMAGENET_DEFAULT)
      for size, top1 in (("tiny", 79.7), ("small", 82.1), ("base", 83.2))),
]
PRETRAINED = {(w.variant, w.tag): w for w in _RELEASES}

# "imagenet": the most accurate 1000-class checkpoint of each variant. Where no top-1 is confirmed (SAM/GSAM), GSAM
# is chosen: its paper reports it above SAM for every model it trains.
IMAGENET_ALIAS = {
    "mixer_b16": "miil_in21k_ft_in1k",  # 82.3 (timm) vs 76.6 for Google's imagenet1k
    "mixer_l16": "imagenet1k",  # 72.1: the only 1000-class L/16 release
    "mixer_b32": "gsam",
    "mixer_s32": "gsam",
    "mixer_s16": "gsam",
    "mixer_s8": "gsam",
    "hire_mlp_tiny": "imagenet1k",
    "hire_mlp_small": "imagenet1k",
    "hire_mlp_base": "imagenet1k",
}


def list_pretrained(variant=None):
    """Tags available for `variant` (or every (variant, tag) pair), 'imagenet' aliases included."""
    pairs = sorted(PRETRAINED) + sorted((v, "imagenet") for v in IMAGENET_ALIAS)
    return [tag for v, tag in pairs if v == variant] if variant else pairs


def resolve(variant, tag):
    """The release for `tag` of `variant`, following the 'imagenet' alias."""
    if variant is None:
        raise WeightsError(
            f"weights={tag!r} names a pretrained release, but this model's config matches no released variant; "
            "pass a local checkpoint path instead"
        )
    key = (variant, IMAGENET_ALIAS.get(variant) if tag == "imagenet" else tag)
    if key not in PRETRAINED:
        raise WeightsError(
            f"no pretrained weights {tag!r} for {variant}; available: {', '.join(list_pretrained(variant)) or 'none'}; "
            "a local file must end in .npz, .pth, .bin, .safetensors, .weights.h5 or .keras"
        )
    return PRETRAINED[key]
