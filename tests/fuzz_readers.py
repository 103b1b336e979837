"""Property-based fuzzing (hypothesis) of every file reader keras_mixer owns.

Each reader gets valid seed files plus crafted bad ones (wrong shapes / dtypes, NaN, huge dimensions, pickles
that would run code), and hypothesis feeds it random mutations of those (truncation, bit flips, overwritten,
inserted and zeroed ranges, biased to the header and the trailer where the structure lives) and random bytes.
Every case must end in success or a `keras_mixer.errors.KerasMixerError`: anything else is a crash, a case over
the time box a hang, and a pickle payload that ran is a code execution. Offending inputs are kept.

    python tests/fuzz_readers.py --cases 2000                  # the CI-sized run (the test suite runs this)
    python tests/fuzz_readers.py --cases 20000 --seed 1        # a long run (the README's table)
    python tests/fuzz_readers.py --readers npz,tflite_graph --cases 100 --json counts.json
"""

import argparse
import collections
import io
import json
import os
import pickle
import signal
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_mixer  # noqa: E402
import keras_mixer.export.sandbox  # noqa: E402
from keras_mixer.errors import KerasMixerError  # noqa: E402
from keras_mixer.models.mlp_mixer import official_to_timm  # noqa: E402

MARKER = Path(tempfile.gettempdir()) / "keras_mixer_fuzz_code_ran"
TIME_BOX_SECONDS = 20
keras_mixer.export.sandbox.TIMEOUT_SECONDS = 10  # a LiteRT load that runs away is reported inside our time box


class CodeRan:
    """Pickled, its loading would create MARKER: proof of code execution if the file appears."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


def tiny_mixer(classes=5):
    return keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=classes, gelu="exact",
                                classifier_activation=None)


def official_params(model):
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def bad_variants(arrays, key):
    """Valid containers with bad content: a wrong shape, an integer dtype, NaN, Inf, a missing key, an extra key."""
    return [{**arrays, key: np.zeros((3, 3), np.float32)}, {**arrays, key: arrays[key].astype(np.int32)},
            {**arrays, key: np.full_like(arrays[key], np.nan)}, {**arrays, key: np.full_like(arrays[key], np.inf)},
            {k: v for k, v in arrays.items() if k != key}, {**arrays, "unexpected.weight": np.ones(2, np.float32)}]


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_header_with_shape(shape):
    """An .npz whose array header claims `shape` (huge) with almost no data behind it."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("stem/kernel.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\0" * 64)
    return buffer.getvalue()


def pickle_npz():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        with archive.open("stem/kernel.npy", "w") as member:
            np.lib.format.write_array(member, np.array([CodeRan()], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def torch_bytes(obj):
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def safetensors_bytes(arrays):
    from safetensors.numpy import save

    return save(arrays)


def huge_safetensors():
    header = json.dumps({"stem.proj.weight": {"dtype": "F32", "shape": [2 ** 40, 2 ** 20], "data_offsets": [0, 16]}})
    header = header.encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 16


# --- the readers ---------------------------------------------------------------------------------------------------


class Reader:
    """`seeds` are file contents (bytes) written to a `suffix` file for `action(path)`; with `suffix=None` they are
    arrays handed to `action(array)` directly and `strategy` generates more."""

    def __init__(self, suffix, seeds, action, strategy=None):
        self.suffix, self.seeds, self.action, self.strategy = suffix, seeds, action, strategy
        self.name = None  # set by build_readers


def build_readers(workdir):
    """{name: Reader}: the seed files of each reader and the call that reads a file the way a user's call does."""
    keras.utils.set_random_seed(0)
    model = tiny_mixer()
    params = official_params(model)
    timm = official_to_timm(params)
    torch_tensors = {k: __import__("torch").from_numpy(v) for k, v in timm.items()}
    key = "MixerBlock_0/token_mixing/Dense_0/kernel"

    def load_mixer(path):
        keras_mixer.MLPMixer(4, 8, 2, 6, 12, input_shape=(16, 16, 3), classes=5, weights=str(path))

    model.save_weights(workdir / "seed.weights.h5")
    tiny_mixer(classes=7).save_weights(workdir / "other_head.weights.h5")
    broken = tiny_mixer()
    broken.get_layer("head").bias.assign(np.full(5, np.nan, "float32"))
    broken.save_weights(workdir / "nan.weights.h5")
    model.save(workdir / "seed.keras")
    lambda_model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: x * 2)])
    lambda_model.save(workdir / "lambda.keras")

    from keras_mixer.export import evaluate_tflite, read_labels, read_metadata, to_tflite
    from keras_mixer.export.edgetpu import check_edgetpu

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (4, 16, 16, 3)).astype("float32")
    labels = [f"class {i}" for i in range(5)]
    tflite_seeds = [Path(to_tflite(model, workdir / f"seed_{q}.tflite", q, representative_data=images, labels=labels))
                    .read_bytes() for q in ("int8", "float32")]
    prebuilt = tiny_mixer()
    from keras_mixer.export import load_interpreter, predict

    interpreter = load_interpreter(workdir / "seed_int8.tflite")

    readers = {
        "npz": Reader(".npz", [npz_bytes(params), *map(npz_bytes, bad_variants(params, key)), pickle_npz(),
                               npy_header_with_shape((2 ** 40, 2 ** 30)), npy_header_with_shape((-1, 4))], load_mixer),
        "torch": Reader(".pth", [torch_bytes(torch_tensors), torch_bytes({"state_dict": torch_tensors}),
                                 *(torch_bytes({k: __import__("torch").from_numpy(np.ascontiguousarray(v))
                                                for k, v in bad.items()})
                                   for bad in bad_variants(timm, "blocks.0.mlp_tokens.fc1.weight")),
                                 pickle.dumps(CodeRan()), torch_bytes({"weights": CodeRan()})], load_mixer),
        "safetensors": Reader(".safetensors", [safetensors_bytes(timm), *map(safetensors_bytes, bad_variants(
            timm, "blocks.0.mlp_tokens.fc1.weight")), huge_safetensors()], load_mixer),
        "weights_h5": Reader(".weights.h5", [(workdir / f"{name}.weights.h5").read_bytes()
                                             for name in ("seed", "other_head", "nan")],
                             lambda path: keras_mixer.weights.load_keras_weights(prebuilt, path)),
        "keras": Reader(".keras", [(workdir / "seed.keras").read_bytes(), (workdir / "lambda.keras").read_bytes()],
                        keras_mixer.weights.load_keras_model),
        "tflite_evaluate": Reader(".tflite", tflite_seeds,
                                  lambda path: evaluate_tflite(path, images, np.arange(4) % 5)),
        "tflite_graph": Reader(".tflite", tflite_seeds, check_edgetpu),
        "tflite_metadata": Reader(".tflite", tflite_seeds, read_metadata),
        "images": Reader(None, [images, np.full_like(images, np.nan), images[..., :2], images.astype(np.int8),
                                np.zeros((0, 16, 16, 3), np.float32), np.array([[None]], dtype=object)],
                         lambda array: predict(interpreter, array), image_arrays()),
        "labels": Reader(".txt", ["\n".join(labels).encode(), "a\n\nb".encode(), b"\xff\xfe", "ünïcode\n".encode()],
                         lambda path: read_labels(path, classes=5)),
    }
    for name, reader in readers.items():
        reader.name = name
    return readers


# --- mutations -----------------------------------------------------------------------------------------------------

REGIONS = st.sampled_from(["start", "end", "anywhere"])
FRACTION = st.floats(0, 1, allow_nan=False)
MUTATION = st.one_of(
    st.tuples(st.just("truncate"), REGIONS, FRACTION),
    st.tuples(st.just("flip"), REGIONS, FRACTION, st.integers(0, 7)),
    st.tuples(st.just("overwrite"), REGIONS, FRACTION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert"), REGIONS, FRACTION, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("zero"), REGIONS, FRACTION, st.integers(1, 512)),
)


def position(data, region, fraction):
    """Where a mutation lands: the first or last 512 bytes (headers, zip directories) or anywhere."""
    n = max(len(data), 1)
    window = min(512, n)
    if region == "start":
        return int(fraction * (window - 1))
    if region == "end":
        return n - 1 - int(fraction * (window - 1))
    return int(fraction * (n - 1))


def mutate(data, mutations):
    data = bytearray(data)
    for kind, region, fraction, *extra in mutations:
        at = position(data, region, fraction)
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= 1 << extra[0]
        elif kind == "overwrite":
            data[at:at + len(extra[0])] = extra[0]
        elif kind == "insert":
            data[at:at] = extra[0]
        elif kind == "zero":
            data[at:at + extra[0]] = bytes(len(data[at:at + extra[0]]))
    return bytes(data)


def image_arrays():
    """Arrays a user might pass as images: any dtype, 0-5 dimensions, NaN/Inf/huge values."""
    from hypothesis.extra import numpy as hnp

    dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.uint8, np.int64, np.bool_])
    shapes = st.one_of(st.just((2, 16, 16, 3)), hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=17))
    return hnp.arrays(dtypes, shapes)


def cases(reader):
    if reader.suffix is None:
        return st.one_of(st.sampled_from(range(len(reader.seeds))).map(reader.seeds.__getitem__), reader.strategy)
    seeded = st.tuples(st.integers(0, len(reader.seeds) - 1), st.lists(MUTATION, min_size=0, max_size=4))
    return st.one_of(seeded.map(lambda c: mutate(reader.seeds[c[0]], c[1])), st.binary(max_size=2048))


# --- running -------------------------------------------------------------------------------------------------------


class TimeBox(Exception):
    pass


def _alarm(signum, frame):
    raise TimeBox()


def run_case(reader, data, path, kept_dir, counts, examples):
    if reader.suffix is not None:
        path.write_bytes(data)
    MARKER.unlink(missing_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_BOX_SECONDS)
    outcome = "ok"
    try:
        reader.action(path if reader.suffix is not None else data)
    except KerasMixerError:
        outcome = "typed error"
    except TimeBox:
        outcome = "hang"
    except Exception as error:  # anything untyped is a finding
        outcome = "crash"
        examples.setdefault(f"{type(error).__name__}: {str(error)[:200]}", len(examples))
    finally:
        signal.alarm(0)
    if MARKER.exists():
        outcome = "code execution"
    if outcome not in ("ok", "typed error"):
        kept = kept_dir / f"{reader.name}_{outcome.replace(' ', '_')}_{counts[outcome]}{reader.suffix or '.npy'}"
        kept.write_bytes(data) if reader.suffix is not None else np.save(kept, data, allow_pickle=True)
    counts[outcome] += 1
    return outcome


def fuzz(reader_name, reader, cases_per_reader, seed, workdir, kept_dir):
    counts, examples = collections.Counter(), {}
    path = workdir / f"case{reader.suffix or ''}"
    # every seed as it is (the first is valid, the others crafted to be refused), then the generated cases
    seed_outcomes = [run_case(reader, data, path, kept_dir, counts, examples) for data in reader.seeds]

    @settings(max_examples=cases_per_reader, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(cases(reader))
    def generated(data):
        run_case(reader, data, path, kept_dir, counts, examples)

    if seed is not None:
        generated._hypothesis_internal_use_seed = seed
    generated()
    return counts, list(examples), seed_outcomes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=2000, help="generated cases per reader (plus its seeds)")
    parser.add_argument("--readers", help="comma-separated subset (default: all)")
    parser.add_argument("--seed", type=int, help="random seed (default: hypothesis' derandomized, reproducible run)")
    parser.add_argument("--json", help="write the counts here")
    parser.add_argument("--keep", default="fuzz_findings", help="folder for inputs that crashed or hung")
    args = parser.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # readers warn on many damaged inputs; the counts are the output
    kept_dir = Path(args.keep)
    kept_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        readers = build_readers(Path(tmp))
        names = args.readers.split(",") if args.readers else list(readers)
        print(f"{'reader':<17}{'cases':>7}{'ok':>7}{'typed error':>13}{'crashes':>9}{'hangs':>7}{'code ran':>10}"
              f"{'seconds':>9}")
        for name in names:
            started = time.perf_counter()
            counts, examples, seed_outcomes = fuzz(name, readers[name], args.cases, args.seed, Path(tmp), kept_dir)
            seconds = time.perf_counter() - started
            total = sum(counts.values())
            results[name] = {"cases": total, **counts, "seconds": round(seconds, 1), "crash_examples": examples,
                             "seed_outcomes": seed_outcomes}
            print(f"{name:<17}{total:>7}{counts['ok']:>7}{counts['typed error']:>13}{counts['crash']:>9}"
                  f"{counts['hang']:>7}{counts['code execution']:>10}{seconds:>9.1f}", flush=True)
            for example in examples[:5]:
                print(f"    crash: {example}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    failed = sum(r.get("crash", 0) + r.get("hang", 0) + r.get("code execution", 0) for r in results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
