"""`.keras` files that remember what the model was trained on: the class names and the evaluation crop travel
inside the archive (`keras_mixer.json`, beside Keras' own entries, which Keras' loader ignores), so that `export`
embeds the labels in the TFLite metadata and `predict` / `evaluate` preprocess as training evaluated."""

import json
import os
import zipfile

from keras_mixer.errors import WeightsError, is_number
from keras_mixer.io_utils import atomic_path, folder_given_as_model

INFO_ENTRY = "keras_mixer.json"
INFO_KEYS = ("class_names", "crop_fraction", "dataset", "eval_top1", "float_eval_top1", "ptq_eval_top1")


def save_model(model, path, **info):
    """`model.save(path)`, written atomically, with `info` (class_names: list of str, crop_fraction: float,
    dataset: str; eval_top1: the model's validation top-1 when saved; for a QAT model, float_eval_top1 and
    ptq_eval_top1: its float model's and that model's int8 export's; None values are left out) stored in the
    archive."""
    unknown = set(info) - set(INFO_KEYS)
    if unknown:
        raise WeightsError(f"unknown model info {sorted(unknown)}; known: {INFO_KEYS}")
    info = {key: value for key, value in info.items() if value is not None}
    class_names = info.get("class_names")
    if class_names is not None and len(class_names) != model.output_shape[-1]:
        raise WeightsError(f"{len(class_names)} class names for a model with {model.output_shape[-1]} outputs")
    with atomic_path(path) as tmp:
        model.save(tmp)
        if info:
            with zipfile.ZipFile(tmp, "a") as archive:
                archive.writestr(INFO_ENTRY, json.dumps(info, indent=1))
    return os.fspath(path)


def require_model_file(path):
    """`path` as a string; WeightsError naming it if no such file exists, and the models inside where it is a folder
    (a run's: `train --output runs/float` writes runs/float/model.keras)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise WeightsError(folder_given_as_model(path))
    if not os.path.isfile(path):
        raise WeightsError(f"model file {path!r} does not exist")
    return path


def read_model_info(path):
    """The info `save_model` stored in a `.keras` file ({} for any other `.keras` file)."""
    require_model_file(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if INFO_ENTRY not in archive.namelist():
                return {}
            info = json.loads(archive.read(INFO_ENTRY).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: unreadable {INFO_ENTRY} ({type(error).__name__}: {error})") from error
    names = info.get("class_names") if isinstance(info, dict) else None
    fraction = info.get("crop_fraction") if isinstance(info, dict) else None
    if not isinstance(info, dict) or (names is not None and not (
            isinstance(names, list) and all(isinstance(name, str) for name in names))) or (
            fraction is not None and not (is_number(fraction) and 0 < fraction <= 1)):
        raise WeightsError(f"{path}: malformed {INFO_ENTRY}: {str(info)[:200]}")
    return {key: info[key] for key in INFO_KEYS if key in info}
