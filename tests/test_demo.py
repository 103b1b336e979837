import json
import subprocess
import sys


def test_demo_cli_runs_end_to_end(demo_run):
    """The README's command 1 as it stands (30 float epochs, 5 QAT), held to the README's table: every model and file
    above 93 % top-1 on the 360 test scans, every export agreeing with its Keras model on 98 %, the Edge TPU form
    mapped op for op. (The run is conftest's `demo_run`, shared with test_export.)"""
    out, result = demo_run
    assert result["returncode"] == 0, result["stderr"][-2000:]
    assert "int8 (QAT)" in result["stdout"]
    report = json.loads((out / "report.json").read_text())
    rows = report["results"]
    assert all(row["top1"] >= 0.93 for row in rows.values()), rows  # the README: 95.6-96.1 %; chance is 10 %
    exports = {name: row for name, row in rows.items() if "size_kb" in row}
    assert len(exports) == 5 and all(row["agreement"] >= 0.98 for row in exports.values()), exports
    mapped, ops = rows["int8 Edge TPU"]["edgetpu"].split("/")
    assert mapped == ops, rows["int8 Edge TPU"]
    assert report["command"].startswith("keras-mixer demo --epochs 30 --qat-epochs 5") and report["machine"]["cores"]
    for name in ("model.keras", "model_qat.keras", "model_float32.tflite", "model_int8.tflite", "model_int8_ptq.tflite",
                 "model_int8_integer.tflite", "model_int8_edgetpu.tflite"):
        assert (out / name).stat().st_size > 0, name
    for name in ("training_curves.png", "confusion_matrix_int8.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_cli_reports_bad_arguments():
    result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "nonsense"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_demo_replaces_only_its_own_earlier_run(tmp_path, capsys):
    """`demo --output` onto a file, or onto a folder holding a model that `train` wrote, is one line and nothing there
    changes; a folder of an earlier demo run is the demo's to replace (checked before any training)."""
    import keras_mixer_cli

    trained = tmp_path / "runs" / "train"
    trained.mkdir(parents=True)
    (trained / "model.keras").write_bytes(b"the user's model")
    (trained / "report.json").write_text(json.dumps({"dataset": "photos", "eval_top1": 0.9}))
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's notes")
    for output, message in ((trained, f"--output {trained} holds model.keras, report.json, which the demo would "
                                      "replace and which no demo run wrote: choose another --output"),
                            (notes, f"--output {notes} is a file, not a folder")):
        assert keras_mixer_cli.main(["demo", "--output", str(output)]) == 2
        assert capsys.readouterr().err.strip() == f"keras-mixer demo: error: {message}"
    assert (trained / "model.keras").read_bytes() == b"the user's model" and notes.read_text() == "the user's notes"

    from keras_mixer.demo import check_demo_folder

    earlier = tmp_path / "demo"
    earlier.mkdir()
    (earlier / "model.keras").write_bytes(b"a demo model")
    (earlier / "report.json").write_text(json.dumps({"dataset": "sklearn digits 32x32: 1437 train / 360 test"}))
    check_demo_folder(earlier)  # no error: the demo runs again there
