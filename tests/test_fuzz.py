"""Every reader we own, fuzzed (tests/fuzz_readers.py, hypothesis): success or our typed error, nothing else."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
CASES_PER_READER = 500  # per reader: ~1.3 min on 2 cores; the long runs: docs/reliability.md


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    pytest.importorskip("hypothesis", reason="install the test extra: pip install -e '.[test]'")
    out = tmp_path_factory.mktemp("fuzz")
    # a subprocess: a reader that crashed the interpreter itself (a segfault in native code) must fail this test,
    # not the whole suite
    run = subprocess.run([sys.executable, str(HERE / "fuzz_readers.py"), "--cases", str(CASES_PER_READER),
                          "--json", str(out / "counts.json"), "--keep", str(out / "findings")],
                         capture_output=True, text=True, timeout=1800, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    print(run.stdout)
    assert run.returncode in (0, 1), f"the fuzzer died (exit {run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-3000:]}"
    return json.loads((out / "counts.json").read_text())


READERS = ["npz", "torch", "safetensors", "weights_h5", "keras", "tflite_evaluate", "tflite_graph", "tflite_metadata",
           "labels", "images"]


@pytest.mark.parametrize("reader", READERS)
def test_reader_never_crashes_hangs_or_runs_code(fuzz_results, reader):
    counts = fuzz_results[reader]
    assert counts["cases"] >= CASES_PER_READER
    for outcome in ("crash", "hang", "code execution"):
        assert counts.get(outcome, 0) == 0, (outcome, counts["crash_examples"])


@pytest.mark.parametrize("reader", READERS)
def test_valid_seed_loads_and_crafted_bad_ones_are_refused(fuzz_results, reader):
    # seeds: the first is a valid file; the rest have wrong shapes / dtypes, NaN, Inf, missing or extra keys, huge
    # dimensions, pickled code, a Lambda layer (Keras safe mode), bad label text, NaN / integer / empty / wrongly
    # shaped image arrays — each must be refused
    first, *crafted = fuzz_results[reader]["seed_outcomes"]
    assert first == "ok"
    valid_variants = {"torch": 1, "tflite_evaluate": 1, "tflite_graph": 1, "tflite_metadata": 1}  # other valid forms
    extra_valid, bad = crafted[:valid_variants.get(reader, 0)], crafted[valid_variants.get(reader, 0):]
    assert all(outcome == "ok" for outcome in extra_valid)
    assert all(outcome == "typed error" for outcome in bad), bad
