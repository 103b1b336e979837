"""One registry of named variants across all model families.

One naming rule: a variant's name is its builder's name in snake case, with the family's short prefix (`MixerB16`:
`mixer_b16`, as timm and big_vision name it; `ASMLPTiny`: `as_mlp_tiny`; `HireMLPTiny`: `hire_mlp_tiny`;
`VisionPermutatorSmall14`: `vip_small14`; `RaftMLPSmall`: `raft_mlp_small`; `SparseMLPSmall`: `sparse_mlp_small`).
Names registered before the rule (`as_mlp_t`, `vip_s14`, `raft_mlp_s`, `sparse_mlp_s`, ...) stay as aliases, so
scripts and saved run definitions that use them keep working; `list_models` lists the names of the rule."""

import difflib
import fnmatch
import os
import re
import warnings

from keras_mixer.errors import KerasMixerError
from keras_mixer.io_utils import folder_given_as_model
from keras_mixer.weights.formats import WEIGHT_FILE_SUFFIXES
from keras_mixer.weights.pretrained import list_pretrained as released_tags

_BUILDERS = {}
_ALIASES = {}  # a former name -> the variant's name


def register_variant(name, builder, aliases=()):
    """Records `builder` under `name` (and its former names `aliases`) and returns it (so a module can write
    `MixerB16 = register_variant(...)`)."""
    for one in (name, *aliases):
        if one in _BUILDERS or one in _ALIASES:
            raise KerasMixerError(f"model variant {one!r} is registered twice")
    _BUILDERS[name] = builder
    _ALIASES.update(dict.fromkeys(aliases, name))
    return builder


def variant_name(name):
    """The registered name of `name`, which may be a former name (an alias); unknown names are returned as given."""
    return _ALIASES.get(name, name)


def names_a_file(model):
    """Whether `model` (a name given for a model) means a file, not a registry variant: a registered name or timm's
    Hugging Face Hub id (`hf-hub:timm/...`) never does (a run folder named after its model is no model); otherwise a
    name with a folder part, a model or weights file's suffix, or that exists on disk. Every command reads a model
    so: a file then says what is wrong with it (a .tflite, a checkpoint, missing) and a name that is no variant the
    variants it is near, or timm's name for one."""
    text = os.fspath(model)
    if variant_name(text) in _BUILDERS or re.match(r"hf[-_]hub:", text, re.IGNORECASE):
        return False
    return os.path.dirname(text) != "" or text.lower().endswith((".tflite", ".h5", *WEIGHT_FILE_SUFFIXES)) \
        or os.path.exists(text)


def list_models(filter="", pretrained=False, exclude_filters=""):  # noqa: A002 (timm's argument names)
    """Names of the registered variants, sorted, chosen as timm's `list_models` chooses: `filter` is a wildcard
    pattern (`"*b16*"`, fnmatch's rules, case-insensitive) or a list of them, and keeps the names any of them matches;
    `exclude_filters` drops the names its patterns match; `pretrained=True` keeps the variants that have a release
    (`list_pretrained(name)` gives their tags)."""
    names = sorted(_BUILDERS)
    if filter:
        names = [name for name in names if _matches_any(name, filter, "filter")]
    if exclude_filters:
        names = [name for name in names if not _matches_any(name, exclude_filters, "exclude_filters")]
    if pretrained:
        released = {variant for variant, _ in released_tags()}
        names = [name for name in names if name in released]
    return names


def _matches_any(name, patterns, argument):
    """Whether `name` matches one of `patterns` (a wildcard string or a list of them)."""
    patterns = [patterns] if isinstance(patterns, str) else patterns
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(one, str) for one in patterns):
        raise KerasMixerError(f"list_models' {argument} must be a wildcard pattern like '*b16*' or a list of them, "
                              f"got {patterns!r}")
    return any(fnmatch.fnmatchcase(name, pattern.lower()) for pattern in patterns)


def list_pretrained(name=None):
    """Tags of the releases of the variant `name` (a former name too; "imagenet" where it has one), for its
    `weights=`; without a name, every (variant, tag) pair. A name that is no variant is refused: an empty list
    would read as "no releases"."""
    return released_tags(registered_name(name) if name is not None else None)


def registered_name(name):
    """The registered name of `name` (a former name too); KerasMixerError naming the nearest names if it is none."""
    registered = variant_name(name)
    if registered not in _BUILDERS:
        if os.path.isdir(str(registered)):  # a run's folder, given where its model.keras belongs
            raise KerasMixerError(folder_given_as_model(str(registered)))
        hint = _timm_translation(str(registered))
        if not hint:
            lowered = [str(registered).lower()] if str(registered).lower() in _BUILDERS else []
            near = lowered or difflib.get_close_matches(str(registered), list_models(), n=3)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise KerasMixerError(f"unknown model {registered!r}; {hint}keras_mixer.list_models() lists all "
                              f"{len(_BUILDERS)}")
    return registered


# timm names a Mixer by its resolution and its weights by a tag after a dot (`mixer_b16_224.goog_in21k_ft_in1k`);
# its names from before tags (timm < 0.9) carried the weights in the name: their tags in timm's deprecation table
TIMM_NAME = re.compile(r"(?P<variant>[a-z0-9_]+?)_224(?P<weights>_[a-z0-9_]+)?(?:\.(?P<tag>[a-z0-9_]+))?")
TIMM_OLD_WEIGHTS = {"_in21k": "goog_in21k", "_miil": "miil_in21k_ft_in1k", "_miil_in21k": "miil_in21k"}


def _timm_translation(name):
    """For timm's name of a registered variant (with or without its weights' tag): the call that builds it here."""
    # timm.create_model also takes a Hugging Face Hub id, `hf-hub:timm/<name>`
    match = TIMM_NAME.fullmatch(re.sub(r"^hf[-_]hub:timm/", "", name.lower()))
    if not match or match["variant"] not in _BUILDERS:
        return ""
    variant, tag = match["variant"], match["tag"] or TIMM_OLD_WEIGHTS.get(match["weights"])
    if match["weights"] and not tag:
        return ""
    if not tag:
        return f"that is timm's name; here it is {variant!r} (224 x 224 by default). "
    released = released_tags(variant)
    if tag in released:
        return (f"that is timm's name; here it is {variant!r} with weights={tag!r} (--weights on the command "
                "line). ")
    return (f"that is timm's name of {variant!r} with weights {tag!r}, which keras_mixer does not release; "
            f"it has {', '.join(released) or 'none'}, or load a checkpoint file. ")


def refuse_weights_beside(model, weights, error=KerasMixerError, given=None):
    """`error` if `weights` come with a model that is not a registry name (a file or a model object, called so
    by the caller): it brings its own, and they would be ignored. `given`: how the caller's user wrote them."""
    if weights is not None:
        brings = os.fspath(model) if isinstance(model, (str, os.PathLike)) else "a keras.Model"
        raise error(f"{given or f'weights={weights!r}'} load into a registry model (mixer_b16, ...); {brings} brings "
                    "its own")


def trained_variant(name, weights, **arguments):
    """`create_model(name, weights=weights, **arguments)` for predicting or evaluating, where only the trained
    model will do: refused without weights (an untrained model's top classes are noise, a Mixer's zero head scores
    every class alike) and when the checkpoint's head is not the model's (loaded around a head of initial weights,
    with a warning, as fine-tuning wants)."""
    variant = registered_name(name)
    if weights is None:
        tags = released_tags(variant)
        choices = f"a pretrained tag ({', '.join(tags)}) or a checkpoint file" if tags else (
            "a checkpoint file (it has no pretrained release)")
        raise KerasMixerError(f"{name!r} without weights is untrained: give weights (--weights on the command "
                              f"line): {choices}")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*-class head, the model")
        try:
            return create_model(name, weights=weights, **arguments)
        except UserWarning as head:
            raise KerasMixerError(f"{name} with weights {weights}: {str(head).split(': loaded')[0]}; convert the "
                                  "file to a .keras model first (keras-mixer convert reads the head's size off it)"
                                  ) from None


# timm's create_model arguments and what the builders (keras.applications' signature) call them: a timm user's
# `create_model("mixer_b16", pretrained=True, num_classes=10)` is told the translation, not a TypeError
TIMM_ARGUMENTS = {"pretrained": "weights=\"imagenet\" (a pretrained tag) or a checkpoint file",
                  "num_classes": "classes", "img_size": "input_shape=(height, width, 3)",
                  "in_chans": "input_shape=(height, width, channels)", "drop_rate": "dropout_rate",
                  "global_pool": "pooling"}


def create_model(name, **kwargs):
    """Builds the variant `name` (e.g. "mixer_b16"; a former name too) with the builder's keyword arguments
    (keras.applications', as `keras_mixer.MixerB16` takes them: `weights`, `classes`, `input_shape`, ...)."""
    builder = _BUILDERS[registered_name(name)]
    timm_words = [f"{key} -> {TIMM_ARGUMENTS[key]}" for key in kwargs if key in TIMM_ARGUMENTS]
    if timm_words:
        raise KerasMixerError(f"create_model takes keras.applications' arguments, not timm's: {'; '.join(timm_words)}")
    return builder(**kwargs)
