"""One registry of named variants across all model families (timm-style names such as `mixer_b16`)."""

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
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _BUILDERS[name](**kwargs)
