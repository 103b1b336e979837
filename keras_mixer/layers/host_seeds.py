"""Random draws from a `keras.random.SeedGenerator` whose state stays on the host under the torch backend.

Keras' torch random ops read the seed state back to the host (`int(seed)`) and write the next state from NumPy. With
the state on a GPU, every draw is two stream syncs: one per DropPath in each training step (14 per forward of a
Mixer-S/16 with stochastic depth, counted with the torch profiler), so the host cannot queue kernels ahead. Here the
state lives on the host, where both are plain memory operations, and the draw itself runs on the input's device with
the same torch generator call as `keras.random`, so the values and the seed states (which the trainer saves for exact
resumes) are Keras' own (tested). JAX and TensorFlow keep Keras' path: their draws do not leave the device.
"""

import contextlib

import keras


def seed_generator(seed=None):
    """A `keras.random.SeedGenerator`; under torch, its state is made on the CPU."""
    with keras.device("cpu") if keras.backend.backend() == "torch" else contextlib.nullcontext():
        return keras.random.SeedGenerator(seed)


def _seeded_on_host(generator):
    return keras.backend.backend() == "torch" and generator.state.value.device.type == "cpu"


def _draw(generator, like, torch_draw):
    """`torch_draw(torch, torch_generator)` on `like`'s device, seeded from the host copy of the state as keras seeds
    its own torch draws (backend/torch/random.py), and like them kept out of torch.compile's graphs (a
    torch.Generator cannot be traced)."""
    import torch

    @torch.compiler.disable
    def draw():
        with keras.device("cpu"):
            first, second = generator.next()
        seeded = torch.Generator(device=like.device).manual_seed(int(first + second) & 0xFFFFFFFF)
        return torch_draw(torch, seeded)

    return draw()


def uniform(shape, generator, like):
    """`keras.random.uniform(shape, seed=generator, dtype=like.dtype)` on `like`'s device."""
    if not _seeded_on_host(generator):
        return keras.random.uniform(shape, seed=generator, dtype=like.dtype)
    return _draw(generator, like, lambda torch, seeded: torch.rand(
        size=tuple(shape), generator=seeded, dtype=like.dtype, device=like.device))


def normal(shape, generator, like):
    """`keras.random.normal(shape, seed=generator, dtype=like.dtype)` on `like`'s device."""
    if not _seeded_on_host(generator):
        return keras.random.normal(shape, seed=generator, dtype=like.dtype)
    return _draw(generator, like, lambda torch, seeded: torch.normal(
        0.0, 1.0, size=tuple(shape), generator=seeded, dtype=like.dtype, device=like.device))
