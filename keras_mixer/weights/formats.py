"""Readers for the checkpoint containers we accept. Each returns {name: ndarray} or raises WeightsError
(dtypes are checked where values meet model variables, in `assign_by_path`: counters such as BatchNorm's
num_batches_tracked are integers).

None of them executes code from the file: `.npz` is read with `allow_pickle=False`, `.pth` with
`torch.load(weights_only=True)`, `.safetensors` by the safetensors library (no torch needed).
"""

import argparse
import os
import pickle
import re
import zipfile

import numpy as np

from keras_mixer.errors import WeightsError

NPZ_SUFFIXES = (".npz",)
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
CHECKPOINT_SUFFIXES = NPZ_SUFFIXES + TORCH_SUFFIXES + SAFETENSORS_SUFFIXES
KERAS_WEIGHT_SUFFIXES = (".weights.h5", ".keras")
WEIGHT_FILE_SUFFIXES = CHECKPOINT_SUFFIXES + KERAS_WEIGHT_SUFFIXES


def checkpoint_format(path):
    """'npz', 'torch', 'safetensors', or None for anything else (e.g. Keras files)."""
    name = os.fspath(path).lower()
    for fmt, suffixes in (("npz", NPZ_SUFFIXES), ("torch", TORCH_SUFFIXES), ("safetensors", SAFETENSORS_SUFFIXES)):
        if name.endswith(suffixes):
            return fmt
    return None


def _require_file(path):
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")


def read_npz(path):
    """A flat `.npz` of '/'-joined Flax paths, as in the official vit_jax / big_vision releases."""
    _require_file(path)
    if not zipfile.is_zipfile(path):  # numpy would read it as a pickle and refuse it as one
        raise WeightsError(f"{path}: not an .npz archive (not a zip file: damaged, or another format)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):  # numpy refuses object arrays (pickles) without allow_pickle
            raise WeightsError(f"{path}: refusing to load pickled data from an .npz ({error})") from error
        raise WeightsError(f"{path}: not a readable .npz archive ({error})") from error
    except Exception as error:  # zipfile / numpy fail in many ways on a damaged archive (BadZipFile, CRC, EOF, ...)
        raise WeightsError(f"{path}: not a readable .npz archive ({type(error).__name__}: {error})") from error
    return arrays


def read_torch(path):
    """A PyTorch state_dict (`.pth`/`.bin`), possibly wrapped as {'state_dict': ...} or {'model': ...}."""
    _require_file(path)
    try:
        import torch
    except ImportError as error:
        raise WeightsError(
            f"{path}: reading PyTorch checkpoints needs torch: the torch extra "
            "(pip install -e '.[torch]' in a checkout), or convert it to .safetensors"
        ) from error
    try:
        # authors' training checkpoints also hold the run's argparse.Namespace: the one class allowed beside tensors
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's message is a page (with terminal escapes) advising weights_only=False: one line, naming the class
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
        raise WeightsError(f"{path}: holds {what}, not only tensors; refusing to unpickle it (it could run code): "
                           "save the weights alone, torch.save(model.state_dict(), path) or safetensors") from error
    except Exception as error:  # torch's zip / pickle readers fail in many ways on a damaged file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(error).__name__}: {first_line})") \
            from error
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state_dict mapping names to tensors")
    arrays = {key: value.detach().float().numpy() if value.is_floating_point() else value.numpy()
              for key, value in obj.items()}
    return arrays


def read_safetensors(path):
    """A `.safetensors` file (read without torch)."""
    _require_file(path)
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(path)
    except (SafetensorError, OSError, ValueError, MemoryError) as error:
        raise WeightsError(f"{path}: not a readable .safetensors file ({error})") from error
    return arrays


def read_checkpoint(path):
    """Reads any supported checkpoint container by its suffix."""
    path = os.fspath(path)
    readers = {"npz": read_npz, "torch": read_torch, "safetensors": read_safetensors}
    fmt = checkpoint_format(path)
    if fmt is None:
        raise WeightsError(f"{path}: unknown checkpoint format; expected one of .npz, .pth, .bin, .safetensors")
    return readers[fmt](path)


HUB_CONFIG = "config.json"


def hub_normalization(path):
    """((mean, ...), (std, ...)) that timm's `config.json` beside a checkpoint file records for it (the layout of
    a Hugging Face Hub snapshot, `timm/<model>.<tag>`: `pretrained_cfg.mean` / `.std`), or None without one. A MIIL
    Mixer is trained on [0, 1] pixels, a Google one on [-1, 1]: the file alone does not say which. A config.json
    that is not JSON is refused; one without timm's `pretrained_cfg` (another library's) is not ours to read."""
    import json

    config_path = os.path.join(os.path.dirname(os.fspath(path)), HUB_CONFIG)
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{config_path}: beside {path} but not readable JSON ({type(error).__name__}): it would "
                           "say which pixel normalization the checkpoint was trained on; fix or move it") from error
    pretrained = config.get("pretrained_cfg") if isinstance(config, dict) else None
    if not isinstance(pretrained, dict) or "mean" not in pretrained or "std" not in pretrained:
        return None
    return pretrained["mean"], pretrained["std"]
