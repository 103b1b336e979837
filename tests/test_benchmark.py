"""Smoke test of the benchmark harness (the measurements themselves are `keras-mixer benchmark`, not tests)."""

import csv
import json

from keras_mixer.benchmark import run_benchmark


def test_harness_measures_same_weights_in_each_runtime(tmp_path):
    runtimes = ("tflite_fp32", "keras_tf", "keras_jax", "timm_eager")
    result = run_benchmark(["mixer_tiny"], runtimes=runtimes, batch_sizes=(1, 2), threads=(1,), runs=3, output=tmp_path,
                           progress=lambda line: None)
    assert not result["failures"], result["failures"]
    rows = result["rows"]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in runtimes for b in (1, 2)}
    for row in rows:  # the same weights everywhere: float runtimes reproduce the Keras logits
        assert row["max_abs_diff_vs_keras"] < 1e-4 and row["argmax_agreement"] == 1.0, row
        assert row["median_ms"] > 0 and row["p90_ms"] >= row["median_ms"] and row["peak_rss_mb"] > 0
    assert all(r["speedup_vs_timm_eager"] == 1.0 for r in rows if r["runtime"] == "timm_eager")
    assert json.loads((tmp_path / "results.json").read_text())["machine"]["cores"] >= 1
    assert len(list(csv.DictReader(open(tmp_path / "results.csv")))) == len(rows)
    assert (tmp_path / "latency.png").stat().st_size > 0
    assert "| mixer_tiny | timm_eager | 1 | 1 |" in (tmp_path / "table.md").read_text()
