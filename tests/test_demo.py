import json
import os
import subprocess
import sys


def test_demo_cli_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "keras_mixer_cli", "demo", "--epochs", "1", "--qat-epochs", "1", "--output", str(out)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8 (QAT)" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["float_test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert report["int8_test_accuracy"] > 0.3
    for name in ("model.keras", "model_qat.keras", "model_float32.tflite", "model_int8.tflite", "model_int8_ptq.tflite",
                 "model_int8_integer.tflite", "model_int8_edgetpu.tflite"):
        assert (out / name).stat().st_size > 0, name
    for name in ("training_curves.png", "confusion_matrix_int8.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_cli_reports_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr
