"""tensorflow-datasets builders of our own, for testing the tfds path offline (a package, so that tfds resolves
their code path through importlib_resources as it does for its own datasets)."""
