import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# Each xdist worker gets its share of the cores for TensorFlow's and torch's op thread pools (read at their import,
# inherited by the subprocesses a test starts): two workers of two threads each on 2 cores made ~8 % more work of
# the same tests (a digits fit + QAT + int8 export in two processes side by side: 47-48 s against 52 s, four
# alternating runs each), in the threads' contention for the cores.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", threads)
    os.environ.setdefault("OMP_NUM_THREADS", threads)

# timm imports torchvision, whose native ops crash the process when loaded after TensorFlow (seen with
# tensorflow-cpu 2.21 + torchvision 0.29.1); loading the reference first avoids it. keras_mixer itself only ever
# imports torch (to read .pth files), which is safe in either order.
import timm  # noqa: E402,F401
import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402

# The two workers (`-n 2 --dist loadfile`) take whole files from one queue. xdist's default queue order (most tests
# first) started the slowest files late and left one worker about 100 s alone at the end of the run. The files that
# take longest go first instead (seconds from a full run's `--durations`/junit on the 2-core machine, longest
# first), so the last file to start is a short one; `--no-loadscope-reorder` keeps this order. A file not named here
# runs after them, in name order.
SLOWEST_FILES_FIRST = (
    "test_export.py",  # ~450 s: 376 s in the junit run, + the shared demo run (~115 s), - its own training (86 s)
    "test_documented_code.py",  # 398 s
    "test_training.py",  # 312 s
    "test_edgetpu_forms.py",  # 243 s
    "test_own_images.py",  # 186 s
    "test_benchmark.py",  # 179 s
    "test_int8_outliers.py",  # 161 s
    "test_qat_families.py",  # 156 s
    "test_backends.py",  # 125 s
    "test_families.py",  # 92 s
    "test_applications.py",  # 70 s
)


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own tests keep their order


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, worker_id):
    """The README's command 1, `keras-mixer demo`, run once for the whole test run: (its output folder, {returncode,
    stdout, stderr}). test_demo holds it to the README's table, test_export takes its models and files. Under xdist
    the first worker to ask runs it (the lock: the xdist docs' recipe for session data), the other reads the result;
    test_export, which asks first, starts first, so the two never wait on each other."""
    root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # each worker's temp folder sits in the run's
        root = root.parent
    record = root / "demo.json"
    with FileLock(root / "demo.lock"):
        if not record.exists():
            result = subprocess.run([sys.executable, "-m", "keras_mixer_cli", "demo", "--output", str(root / "demo")],
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                                    timeout=600)
            record.write_text(json.dumps({"returncode": result.returncode, "stdout": result.stdout,
                                          "stderr": result.stderr}))
    return root / "demo", json.loads(record.read_text())
