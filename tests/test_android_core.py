"""The Android demo's pure-Java core reproduces keras_mixer's preprocessing and output ranking bit for bit.

Golden vectors come from a real int8/uint8/float32 export: a random camera frame (ARGB, odd sizes) ->
`preprocess_frame` -> the interpreter -> ranked classes. The Java core and its JUnit 5 test are compiled and run
with the JDK (`apt-get install default-jdk-headless junit5`, which .ci/run does).
"""

import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import keras_mixer
from keras_mixer.export import dequantize, load_interpreter, to_tflite
from keras_mixer.preprocessing import preprocess_frame

CORE = Path(__file__).resolve().parent.parent / "android_demo" / "core"
JARS = Path("/usr/share/java")
CONSOLE = JARS / "junit-platform-console-standalone.jar"
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def float_bits(values):
    return np.asarray(values, np.float32).view(np.int32)


def write_case(path, frame, size, interpreter):
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    tensor = preprocess_frame(frame, size, in_scale, in_zero, inp["dtype"])
    interpreter.set_tensor(inp["index"], tensor[None])
    interpreter.invoke()
    raw = interpreter.get_tensor(out["index"])[0]
    logits = dequantize(raw, out).astype(np.float32)
    shifted = np.exp(logits.astype(np.float64) - logits.max())
    probabilities = (shifted / shifted.sum()).astype(np.float32)
    top = np.argsort(-probabilities, kind="stable")[:3]
    out_scale, out_zero = out["quantization"]
    lines = {
        "size": [size], "width": [frame.shape[1]], "height": [frame.shape[0]], "argb": frame.ravel(),
        "input_dtype": [np.dtype(inp["dtype"]).name], "input_scale": float_bits([in_scale]),
        "input_zero_point": [in_zero],
        "expected_input": float_bits(tensor).ravel() if tensor.dtype == np.float32 else tensor.ravel(),
        "output_dtype": [np.dtype(out["dtype"]).name], "output_scale": float_bits([out_scale]),
        "output_zero_point": [out_zero],
        "output": float_bits(raw) if raw.dtype == np.float32 else raw.astype(np.int64).ravel(),
        "expected_logits": float_bits(logits), "expected_top": top, "expected_scores": float_bits(probabilities[top]),
    }
    path.write_text("".join(f"{key} {' '.join(str(v) for v in values)}\n" for key, values in lines.items()))


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    out = tmp_path_factory.mktemp("golden")
    rng = np.random.default_rng(0)
    model = keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=10, classifier_activation=None)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    calibration = rng.uniform(-1, 1, (32, 16, 16, 3)).astype("float32")
    frames = [rng.integers(-2**31, 2**31, (h, w), dtype=np.int64).astype(np.int32) for h, w in
              [(48, 64), (37, 29), (12, 10), (16, 16)]]
    case = 0
    for mode in ("int8", "uint8", "float32"):
        path = to_tflite(model, out / f"{mode}.tflite", mode, representative_data=calibration,
                         labels=LABELS if mode != "uint8" else None)
        interpreter = load_interpreter(path)
        for frame in frames:
            write_case(out / f"case_{case}.txt", frame, 16, interpreter)
            case += 1
    (out / "labels.txt").write_bytes(b"zero\r\none\r\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n")
    plain = to_tflite(model, out / "int8_no_labels.tflite", "int8", representative_data=calibration)
    # the same archive with its member deflated, which other packers write (ours stores it, as Google's reader wants)
    packed = io.BytesIO(Path(plain).read_bytes())
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("labels.txt", "".join(f"{label}\n" for label in LABELS))
    (out / "int8_deflated_labels.tflite").write_bytes(packed.getvalue())
    # a softmax head (its metadata names the output "probability") and a file without metadata
    softmax = keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3), classes=10)
    to_tflite(softmax, out / "softmax_float32.tflite", "float32")
    to_tflite(model, out / "no_metadata.tflite", "float32", metadata=False)
    return out


def test_exports_store_their_label_file_uncompressed(golden):
    """tflite-support's MetadataExtractor reads associated files raw: they must be stored, not deflated."""
    for name in ("int8.tflite", "float32.tflite"):
        with zipfile.ZipFile(golden / name) as archive:
            assert archive.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED


def test_java_core_reads_no_zip_through_java_util_zip_zipfile():
    """Android's ZipFile rejects an archive appended to a flatbuffer (no signature at offset 0): the core parses
    the archive from its end-of-central-directory record itself."""
    for source in CORE.rglob("*.java"):
        if "/test/" not in str(source):
            code = source.read_text()
            assert "import java.util.zip.ZipFile" not in code and "ZipFile(" not in code, source


def test_java_core_reproduces_python(golden, tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    if not (javac and java and CONSOLE.exists()):
        message = "needs a JDK and JUnit 5: apt-get install default-jdk-headless junit5 (.ci/run installs them)"
        if os.environ.get("CI"):  # CI installs them: losing the only Java check there is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    sources = sorted(str(p) for p in CORE.rglob("*.java"))
    classes = tmp_path / "classes"
    subprocess.run([javac, "-d", str(classes), "-cp", str(CONSOLE), *sources], check=True, capture_output=True)
    result = subprocess.run(
        [java, f"-Dgolden.dir={golden}", "-jar", str(CONSOLE), "--class-path", str(classes),
         "--select-class", "org.kerasmixer.core.GoldenVectorTest", "--select-class", "org.kerasmixer.core.ModelFilesTest",
         "--details=summary", "--disable-banner"],
        capture_output=True, text=True, timeout=300,
    )
    print(result.stdout[-1500:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "10 tests successful" in result.stdout


def test_python_frame_preprocessing_matches_tensorflow_resize():
    """The contract the Java port follows is the same interpolation tf.image.resize (bilinear) computes."""
    import tensorflow as tf

    from keras_mixer.preprocessing import argb_to_rgb, center_crop_resize

    rng = np.random.default_rng(1)
    frame = rng.integers(-2**31, 2**31, (30, 50), dtype=np.int64).astype(np.int32)
    rgb = argb_to_rgb(frame)
    crop = rgb[:, 10:40]
    expected = tf.image.resize(crop.astype("float32"), (24, 24), method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(center_crop_resize(rgb, 24), expected, atol=1e-4)
    assert argb_to_rgb(np.array([[np.int32(-16711936)]]))[0, 0].tolist() == [0, 255, 0]  # 0xFF00FF00 is green
