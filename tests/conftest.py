import os

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

# The two workers (`-n 2 --dist loadfile`) take whole files from one queue. xdist's default queue order (most tests
# first) started the slowest files late and left one worker about 100 s alone at the end of the run. The files that
# take longest go first instead (seconds from a full run's `--durations`/junit on the 2-core machine, longest
# first), so the last file to start is a short one; `--no-loadscope-reorder` keeps this order. A file not named here
# runs after them, in name order.
SLOWEST_FILES_FIRST = (
    "test_documented_code.py",  # 398 s
    "test_export.py",  # 351 s
    "test_training.py",  # 312 s
    "test_edgetpu_forms.py",  # 243 s
    "test_own_images.py",  # 186 s
    "test_benchmark.py",  # 179 s
    "test_int8_outliers.py",  # 161 s
    "test_qat_families.py",  # 156 s
    "test_demo.py",  # 129 s
    "test_backends.py",  # 125 s
    "test_families.py",  # 92 s
    "test_applications.py",  # 70 s
)


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own tests keep their order
