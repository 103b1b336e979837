"""The machine a figure was measured on: every result file the project writes records it (`keras-mixer benchmark`,
the demo's report, the repository's benchmark scripts), and the docs print it beside the figure."""

import os
import platform

# the widest vector instructions the CPU has, as /proc/cpuinfo names them: int8 matmuls run ~2-3x faster with
# AVX-512 VNNI than with AVX2 alone, so every figure says which it was measured with
VECTOR_EXTENSIONS = (("avx512_vnni", "AVX-512 VNNI"), ("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimddp", "NEON dot"),
                     ("asimd", "NEON"))


def machine():
    """CPU model, its widest vector extension, core count and the versions that matter for the figures."""
    cpu, flags = platform.processor(), set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = cpuinfo.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1] for line in lines if line.startswith(("flags", "Features"))).split())
    except (OSError, StopIteration):
        pass
    vector = next((name for flag, name in VECTOR_EXTENSIONS if flag in flags), None)
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package, distributions in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)),
                                   ("ai_edge_litert", ("ai-edge-litert",)), ("torch", ("torch",)),
                                   ("timm", ("timm",)), ("onnxruntime", ("onnxruntime",)), ("jax", ("jax",))):
        versions[package] = None
        for distribution in distributions:
            try:
                versions[package] = version(distribution)
                break
            except PackageNotFoundError:
                continue
    return {"cpu": cpu, "vector_extension": vector, "cores": os.cpu_count(), "python": platform.python_version(),
            "versions": versions}
