"""One registry of named variants across all model families (timm-style names such as `mixer_b16`)."""

import difflib

from keras_mixer.errors import KerasMixerError

_BUILDERS = {}


def register_variant(name, builder):
    """Records `builder` under `name` and returns it (so a module can write `MixerB16 = register_variant(...)`)."""
    if name in _BUILDERS:
        raise ValueError(f"model variant {name!r} is registered twice")
    _BUILDERS[name] = builder
    return builder


def list_models():
    """Names of every registered variant, sorted."""
    return sorted(_BUILDERS)


def create_model(name, **kwargs):
    """Builds the variant `name` (e.g. "mixer_b16") with the builder's keyword arguments."""
    if name not in _BUILDERS:
        near = difflib.get_close_matches(str(name), list_models(), n=3)
        hint = f"did you mean {' or '.join(near)}? " if near else ""
        raise KerasMixerError(f"unknown model {name!r}; {hint}keras_mixer.list_models() lists all {len(_BUILDERS)}")
    return _BUILDERS[name](**kwargs)
