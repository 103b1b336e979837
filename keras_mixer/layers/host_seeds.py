"""Random draws from a `keras.random.SeedGenerator` whose state stays on the host under the torch backend.

Keras' torch random ops read the seed state back to the host (`int(seed)`) and write the next state from NumPy. With
the state on a GPU, every draw is two stream syncs: one per DropPath in each training step (14 per forward of a
Mixer-S/16 with stochastic depth, counted with the torch profiler), so the host cannot queue kernels ahead. Here the
state lives on the host, where both are plain memory operations, and the draw itself runs on the input's device with
the same torch generator call as `keras.random`, so the values and the seed states (which the trainer saves for exact
resumes) are Keras' own (tested). JAX and TensorFlow keep Keras' path: their draws do not leave the device.
"""

import keras


def _host_state():
    return keras.backend.backend() == "torch"


def seed_generator(seed=None):
    """A `keras.random.SeedGenerator`; under torch, its state is made on the CPU."""
    if not _host_state():
        return keras.random.SeedGenerator(seed)
    with keras.device("cpu"):
        return keras.random.SeedGenerator(seed)


def _torch_generator(generator, device):
    import torch

    with keras.device("cpu"):
        first, second = generator.next()
    # keras' own seeding of its torch draws (backend/torch/random.py), from the host copy of the state
    return torch.Generator(device=device).manual_seed(int(first + second) & 0xFFFFFFFF)


def uniform(shape, generator, like):
    """`keras.random.uniform(shape, seed=generator, dtype=like.dtype)` on `like`'s device."""
    if not _host_state() or generator.state.value.device.type != "cpu":
        return keras.random.uniform(shape, seed=generator, dtype=like.dtype)
    import torch

    return torch.rand(size=tuple(shape), generator=_torch_generator(generator, like.device), dtype=like.dtype,
                      device=like.device)


def normal(shape, generator, like):
    """`keras.random.normal(shape, seed=generator, dtype=like.dtype)` on `like`'s device."""
    if not _host_state() or generator.state.value.device.type != "cpu":
        return keras.random.normal(shape, seed=generator, dtype=like.dtype)
    import torch

    return torch.normal(0.0, 1.0, size=tuple(shape), generator=_torch_generator(generator, like.device),
                        dtype=like.dtype, device=like.device)
