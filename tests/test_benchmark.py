"""Smoke test of the benchmark harness (the measurements themselves are `keras-mixer benchmark`, not tests)."""

import csv
import json
import os

import pytest

from keras_mixer.benchmark import matmul_stack, mixer_gmacs, run_benchmark


def test_harness_measures_same_weights_in_each_runtime(tmp_path):
    runtimes = ("tflite_fp32", "keras_tf", "keras_jax", "timm_eager", "matmul_peak_fp32")
    result = run_benchmark(["mixer_tiny"], runtimes=runtimes, batch_sizes=(1, 2), threads=(1,), runs=3, output=tmp_path,
                           progress=lambda line: None)
    assert not result["failures"], result["failures"]
    rows = result["rows"]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in runtimes for b in (1, 2)}
    for row in rows:  # the same weights everywhere: float runtimes reproduce the Keras logits
        if row["runtime"] == "matmul_peak_fp32":  # the ceiling: the model's mixing matmuls alone, no logits
            assert row["share_of_peak"] == 1.0 and row["max_abs_diff_vs_keras"] is None
            assert row["gmac_per_s"] == pytest.approx(
                mixer_gmacs("mixer_tiny", mixing_only=True) * row["batch"] / (row["median_ms"] / 1e3))
            continue
        assert 0 < row["share_of_peak"] and row["gmac_per_s"] == pytest.approx(
            mixer_gmacs("mixer_tiny") * row["batch"] / (row["median_ms"] / 1e3))
        assert row["max_abs_diff_vs_keras"] < 1e-4 and row["argmax_agreement"] == 1.0, row
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] and row["peak_rss_mb"] > 0
    assert all(r["speedup_vs_timm_eager"] == 1.0 for r in rows if r["runtime"] == "timm_eager")
    assert json.loads((tmp_path / "results.json").read_text())["machine"]["cores"] >= 1
    assert len(list(csv.DictReader(open(tmp_path / "results.csv")))) == len(rows)
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert "| mixer_tiny | timm_eager | 1 | 1 |" in (tmp_path / "table.md").read_text()
    assert "share of peak" in (tmp_path / "table.md").read_text()


def test_efficiency_counts_the_models_own_matmuls():
    # Mixer-S/32: 49 tokens x 512 channels, 8 blocks of 256- and 2048-wide MLPs, 32x32 patches, 1000 classes
    blocks = 8 * 2 * 49 * 512 * (256 + 2048)
    assert mixer_gmacs("mixer_s32") * 1e9 == pytest.approx(49 * 512 * 3 * 32**2 + blocks + 512 * 1000, rel=1e-12)
    assert mixer_gmacs("mixer_s32", mixing_only=True) * 1e9 == pytest.approx(blocks, rel=1e-12)
    stack = matmul_stack("mixer_s32")
    assert sum(layer.kernel.shape[0] * layer.kernel.shape[1] * layer.output.shape[2]
               for layer in stack.layers if hasattr(layer, "kernel")) == blocks  # rows x kernel = MACs


def test_the_edge_peer_runs_the_same_weights(tmp_path):
    """Google's PyTorch -> LiteRT path (litert-torch + ai-edge-quantizer: the `bench` extra) on the same weights:
    its float file reproduces the Keras logits, its int8 files stay close."""
    import importlib.util

    # looked up, not imported: litert-torch's JAX bridge turns on jax_enable_x64 for the whole process at import
    # (every later JAX test in this worker then made float64 arrays); the benchmark imports it in its own process
    if importlib.util.find_spec("litert_torch") is None:
        if os.environ.get("CI"):  # the test extra installs it: CI must not lose the peer comparison to a skip
            raise ImportError("litert_torch is not installed: pip install -e '.[test]'")
        pytest.skip("the edge peer installs with the test and bench extras: pip install -e '.[test]'")
    runtimes = ("litert_torch_fp32", "litert_torch_dynamic_int8", "litert_torch_static_int8", "matmul_peak_int8")
    result = run_benchmark(["mixer_tiny"], runtimes=runtimes, batch_sizes=(1,), threads=(1,), runs=3, output=tmp_path,
                           progress=lambda line: None)
    assert not result["failures"], result["failures"]
    rows = {row["runtime"]: row for row in result["rows"]}
    assert rows["litert_torch_fp32"]["max_abs_diff_vs_keras"] < 1e-4
    for runtime in runtimes[1:3]:  # logits of a random tiny Mixer span ~±0.5: int8 errors are ~1e-3
        assert rows[runtime]["max_abs_diff_vs_keras"] < 0.05 and rows[runtime]["argmax_agreement"] == 1.0, rows[runtime]
        assert rows[runtime]["share_of_peak"] > 0  # of the int8 matmul peak


def test_gpu_training_benchmark_smoke(tmp_path):
    """`benchmarks/train_gpu.py --smoke` runs a tiny Mixer to the end on this CPU and records every row: torch's
    two feeds (the trainer's fed by tf.data) and timm eager with TensorFlow installed; JAX's device feed, the
    trainer's feed and data_parallel with TensorFlow hidden, as on the GPU machine, which has none (Keras' default
    backend and tf.data missing; `train` on JAX, tested in test_training.py, feeds from tf.data). TensorFlow's rows
    (a GPU figure only where TensorFlow sees one) run the same code path as JAX's and are left to `--smoke` by
    hand: one more process."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "train_gpu.py"
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / "sitecustomize.py").write_text(HIDE_TENSORFLOW)
    without_tensorflow = {**os.environ, "PYTHONPATH": str(tmp_path / "hidden")}
    without_tensorflow.pop("KERAS_BACKEND", None)
    rows, printed = [], ""
    for backends, environment in ((["torch", "timm"], os.environ), (["jax"], without_tensorflow)):
        out = tmp_path / f"{backends[0]}.json"
        result = subprocess.run([sys.executable, str(script), "--smoke", "--backends", *backends, "--output", str(out)],
                                capture_output=True, text=True, timeout=600,
                                env={**environment, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        rows += json.loads(out.read_text())["rows"]
        printed += result.stdout
    assert not [row for row in rows if "error" in row], rows
    kinds = {(row["backend"], row["feed"], row["strategy"]) for row in rows}
    assert kinds == {("jax", "device", "default"), ("jax", "feed", "default"), ("jax", "feed", "data_parallel"),
                     ("torch", "device", "default"), ("torch", "feed", "default"), ("timm eager", "device", "-")}
    assert all(row["images_per_second"] > 0 for row in rows)
    assert all(row["host_waits_per_step"] is None for row in rows)  # counted on torch with CUDA only
    assert "data_parallel costs" in printed


def test_host_waits_are_counted_per_step_on_the_dispatching_thread_only(monkeypatch):
    """train_gpu's count of the host's waits for the GPU (torch's sync debug mode warns at each, which needs CUDA:
    the warnings are made here): a run of n steps that waits once per step, once at its end and once per step on
    another thread (Keras' callback thread, which does not hold up dispatch) waits once per step."""
    import importlib.util
    import threading
    import warnings
    from pathlib import Path

    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("train_gpu", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "train_gpu.py")
    train_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_gpu)
    modes = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", modes.append)

    def run(count):
        def callback_thread():
            for _ in range(count):
                warnings.warn("called a synchronizing CUDA operation")

        other = threading.Thread(target=callback_thread)
        other.start()
        for _ in range(count + 1):
            warnings.warn("called a synchronizing CUDA operation")
        warnings.warn("an unrelated warning")
        other.join()

    assert train_gpu.host_waits_per_step(run, steps=3) == 1.0
    assert modes == ["warn", "default"] * 2


def test_a_gpu_benchmark_row_past_its_time_limit_is_recorded_as_not_done():
    """`--row-timeout` (for rows whose compilation may not end, as Keras' torch.compile step of a Mixer-B/16 on the
    H200): the row's process is stopped and the row says so, named as the rows that finish are."""
    import importlib.util
    import time
    from pathlib import Path

    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("train_gpu", Path(__file__).resolve().parents[1] / "benchmarks" /
                                                  "train_gpu.py")
    train_gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_gpu)
    started = time.perf_counter()
    [row] = train_gpu.run_rows("torch", [["keras", "mixer_tiny", "device", "default", "jit_compile"]],
                               {**train_gpu.SMOKE, "row_timeout": 1})
    assert time.perf_counter() - started < 30
    assert row == {"backend": "torch + jit_compile", "feed": "device", "model": "mixer_tiny",
                   "error": "not done within 1 s (start-up and the first step's compilation included)"}


HIDE_TENSORFLOW = """
import importlib.machinery

find_spec = importlib.machinery.PathFinder.find_spec.__func__


def find_spec_but_tensorflow(cls, name, path=None, target=None):
    return None if name.split(".")[0] == "tensorflow" else find_spec(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(find_spec_but_tensorflow)
"""
