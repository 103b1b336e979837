"""Weight loading shared by every model family: readers, released-file fetching, and by-name assignment.

Our variable paths are the official checkpoint names, so a checkpoint in official layout is assigned by path;
each family's module holds the filter that maps other layouts (e.g. timm's) onto those names.
"""

import contextlib
import json
import os
import re
import warnings
import zipfile

import keras
import numpy as np

from keras_mixer.errors import WeightsError
from keras_mixer.weights.download import fetch
from keras_mixer.weights.formats import (CHECKPOINT_SUFFIXES, KERAS_WEIGHT_SUFFIXES, checkpoint_format,
                                        hub_normalization, read_checkpoint)
from keras_mixer.weights.model_file import read_model_info, require_model_file, save_model
from keras_mixer.weights.pretrained import PRETRAINED, resolve


def is_keras_file(weights):
    return os.fspath(weights).endswith(KERAS_WEIGHT_SUFFIXES)


def is_checkpoint_path(weights):
    return checkpoint_format(weights) is not None


def nonfinite_variables(model):
    """Paths of the model's floating-point variables holding NaN or Inf."""
    return [v.path for v in model.weights if np.issubdtype(np.dtype(v.dtype), np.floating)
            and not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]


def _require_finite(model, path):
    bad = nonfinite_variables(model)
    if bad:
        raise WeightsError(f"{path}: {bad[0]!r} contains NaN or Inf ({len(bad)} variables); nothing was loaded")


@contextlib.contextmanager
def _complete_load(path):
    """Keras only warns when a weights file lacks some layers' groups (they keep their fresh initialization, for
    files of older Keras versions): for us that is a wrong model loaded silently, so it is an error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    partial = [w for w in caught if "freshly-initialized" in str(w.message) or "could not be loaded" in str(w.message)]
    if partial:
        raise WeightsError(f"{path}: incomplete weights ({str(partial[0].message).splitlines()[0]})")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def load_keras_weights(model, path):
    """Loads a `.weights.h5` / `.keras` file saved from the same architecture."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file not found: {path}")
    before = model.get_weights()
    try:
        with _complete_load(path):
            model.load_weights(path)
    except Exception as error:  # h5py / Keras fail anywhere on a damaged file
        model.set_weights(before)  # all or nothing: Keras may have assigned some variables already
        raise WeightsError(f"could not load {path} into {model.name!r}: {_load_error_in_brief(error, path)}") from error
    try:
        _require_finite(model, path)
    except WeightsError:
        model.set_weights(before)
        raise


def _load_error_in_brief(error, path):
    """Keras' load error in one line: how many layers did not fit and the first variable's two shapes, with the
    model a `.keras` file holds. Keras' own message spans pages (every layer listed, whole arrays printed)."""
    text = str(error)
    count = re.search(r"A total of (\d+) objects could not be loaded", text)
    variable = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))\. Target variable: "
                         r"<Variable path=([^,>]+)", text)
    if not (count and variable):
        return (text.strip().splitlines() or [type(error).__name__])[0]
    saved = _saved_model_name(path)
    holds = f"the file holds {saved!r}; " if saved else ""
    return (f"{holds}{count[1]} of its layers do not fit, the first {variable[3]}: {variable[1]} in the model, "
            f"{variable[2]} in the file")


def _saved_model_name(path):
    """The name of the model a `.keras` file holds, or None (a `.weights.h5` file, or no readable config)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))["config"]["name"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None


def load_keras_model(path):
    """A whole `.keras` model, loaded in Keras' safe mode (no Lambda-layer bytecode is run); a missing or damaged
    file raises WeightsError naming it."""
    path = require_model_file(path)
    if path.endswith(".tflite"):
        raise WeightsError(f"{path}: a .tflite file, not a .keras model (LiteRT runs it: keras-mixer evaluate-tflite, "
                           "predict, keras_mixer.export.evaluate_tflite)")
    if path.lower().endswith(CHECKPOINT_SUFFIXES):
        raise WeightsError(f"{path}: a checkpoint, not a .keras model: give the model's registry name with this file "
                           f"as its weights (--weights {path})")
    try:
        with _complete_load(path):
            model = keras.models.load_model(path, safe_mode=True)
    except Exception as error:  # a damaged archive fails anywhere inside Keras' loader (zip, JSON, h5, config)
        if "File not found" in str(error):  # Keras' words for an existing file that is not a zip archive
            raise WeightsError(f"{path}: not a .keras model (not a zip archive: damaged, or another format)") from error
        raise WeightsError(f"{path}: not a loadable .keras model ({type(error).__name__}: {error})") from error
    _require_finite(model, path)
    return model


def load_keras_model_with_info(path):
    """(model, info): `load_keras_model(path)` and what `save_model` recorded in the file (`read_model_info`)."""
    return load_keras_model(path), read_model_info(path)


def assign_by_path(model, params, source, progress=False):
    """Assigns `params` ({variable path: array}) to `model`'s variables, all or nothing.

    Every model variable must be present with its exact shape, and no parameter may be left over; otherwise a
    WeightsError names the missing / unexpected keys or the key with expected vs actual shape.
    """
    variables = {v.path: v for v in model.weights}
    missing = sorted(set(variables) - set(params))
    unexpected = sorted(set(params) - set(variables))
    if missing or unexpected:
        parts = [f"missing keys {missing[:8]}" if missing else "", f"unexpected keys {unexpected[:8]}" if unexpected else ""]
        raise WeightsError(f"{source} does not fit {model.name!r}: " + "; ".join(p for p in parts if p))
    for path, variable in variables.items():
        value = np.asarray(params[path])
        if tuple(value.shape) != tuple(variable.shape):
            raise WeightsError(
                f"{source}: {path!r} has shape {tuple(value.shape)}, the model expects {tuple(variable.shape)}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise WeightsError(f"{source}: {path!r} has dtype {value.dtype}, expected a floating-point array")
        if not np.all(np.isfinite(value)):
            raise WeightsError(f"{source}: {path!r} contains NaN or Inf")
    bar = keras.utils.Progbar(len(variables), unit_name="tensor") if progress else None
    for i, (path, variable) in enumerate(variables.items()):
        variable.assign(np.asarray(params[path], dtype=variable.dtype))
        if bar:
            bar.update(i + 1)


def match_head(params, model, source, head="head"):
    """Fits a checkpoint's classifier to the model: dropped silently when the model has no head
    (include_top=False); replaced by the model's own initialization, with a warning, when the class counts differ."""
    variables = {v.path: v for v in model.weights}
    params = dict(params)
    kernel = f"{head}/kernel"
    if kernel not in variables:
        return {k: v for k, v in params.items() if not k.startswith(f"{head}/")}
    if kernel in params and params[kernel].shape != tuple(variables[kernel].shape):
        warn(f"{source} has a {params[kernel].shape[-1]}-class head, the model {variables[kernel].shape[-1]}: "
             "loaded everything but the head, which keeps its initialization")
        params.update({k: keras.ops.convert_to_numpy(v) for k, v in variables.items() if k.startswith(f"{head}/")})
    return params


def keras_kernel(weight):
    """A PyTorch weight in Keras layout: 1x1 conv (out, in, 1, 1) -> Dense (in, out); conv OIHW -> HWIO;
    linear (out, in) -> (in, out)."""
    if weight.ndim == 4 and weight.shape[2:] == (1, 1):
        return weight[:, :, 0, 0].T
    if weight.ndim == 4:
        return weight.transpose(2, 3, 1, 0)
    return weight.T


LAYER_NORM_VARIABLES = {"weight": "scale", "bias": "bias"}
BATCH_NORM_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                        "running_var": "moving_variance"}


def torch_state_dict_to_keras(state_dict, source, family, rename, norm_module, norm_variables=LAYER_NORM_VARIABLES):
    """Maps a PyTorch state_dict onto our variable paths: `rename(module)` gives the layer path of a module name
    ("network.0.1.attn.proj" -> "network_0_1/attn/proj"); modules matching the regex `norm_module` are norms whose
    tensors map through `norm_variables`, the others have weight -> kernel (Keras layout) and bias. Any key left
    with a "." or of an unknown kind is a WeightsError naming it; BatchNorm's num_batches_tracked is dropped."""
    params = {}
    for key, value in state_dict.items():
        module, _, kind = key.rpartition(".")
        if kind == "num_batches_tracked":
            continue
        path = rename(module)
        norm = re.search(norm_module, path) is not None
        if "." in path or kind not in (norm_variables if norm else ("weight", "bias")):
            raise WeightsError(f"{source}: unexpected key {key!r} for a {family} state_dict")
        if norm:
            params[f"{path}/{norm_variables[kind]}"] = value
        else:
            params[f"{path}/{'bias' if kind == 'bias' else 'kernel'}"] = value if kind == "bias" else keras_kernel(value)
    return params


def load_local_weights(model, weights, convert, family):
    """Loads a Keras weights file, or an official checkpoint mapped by `convert(state_dict, source)` onto the
    model's variable paths (the classifier fitted by `match_head`)."""
    if is_keras_file(weights):
        load_keras_weights(model, weights)
        return
    if not is_checkpoint_path(weights):
        raise WeightsError(
            f"weights={weights!r}: {family} takes a local official checkpoint (.pth, .bin, .safetensors) or a Keras "
            "file (.weights.h5, .keras)"
        )
    source = str(weights)
    params = convert(read_checkpoint(source), source)
    assign_by_path(model, match_head(params, model, source), source)


def released_file(variant, tag):
    """The local path of release `tag` of `variant` (downloaded and cached, or from $KERAS_MIXER_WEIGHTS_DIR);
    a release without a published hash is used with a warning."""
    release = resolve(variant, tag)
    path = fetch(release.filename, release.url, release.file_hash)
    if release.file_hash is None:  # said once the file is there: a failed download is its own one error line
        warn(f"{release.url} has no published hash; it is used unverified")
    return path


def warn(message):
    warnings.warn(message, stacklevel=3)


__all__ = [
    "PRETRAINED",
    "assign_by_path",
    "checkpoint_format",
    "fetch",
    "is_checkpoint_path",
    "is_keras_file",
    "keras_kernel",
    "load_local_weights",
    "torch_state_dict_to_keras",
    "load_keras_model",
    "load_keras_model_with_info",
    "load_keras_weights",
    "match_head",
    "nonfinite_variables",
    "read_checkpoint",
    "read_model_info",
    "released_file",
    "resolve",
    "save_model",
]
