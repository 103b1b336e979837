"""Peak memory and time of exporting the large variants: each (model, quantization, route) in its own process (a
clean peak), its resident set sampled every 50 ms, against the size of the model's float32 weights. Routes:
"blocks", what `to_tflite` does (route "auto": a large chain of blocks converts block by block unless the export
is integer-only), and "whole", the same export converted as one graph (route "saved_model"). With `--stages` it also
prints the resident set at each line the export prints (where the peak is).

    python benchmarks/export_memory.py mixer_l16 mixer_h14 --quantization int8 dynamic float32 --routes blocks whole \
        --output docs/results/export_memory.json
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, threading, time
import numpy as np
name, quantization, images, stages, route = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024

peak = [0.0]
def sample():
    while True:
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
import builtins
print_ = builtins.print
if stages:
    builtins.print = lambda *a, **k: print_(f"[{rss_mb():7.0f} MB, peak {peak[0]:7.0f}]", *a, **k)

import keras_mixer
from keras_mixer.export import to_tflite
model = keras_mixer.create_model(name, classifier_activation=None)
weights_mb = sum(int(np.prod(v.shape)) for v in model.weights) * 4 / 2**20
before = rss_mb()
calibration = np.random.default_rng(0).uniform(-1, 1, (images, *model.input_shape[1:])).astype("float32")
started = time.perf_counter()
path = to_tflite(model, f"/tmp/export_memory_{name}_{quantization}.tflite", quantization,
                 representative_data=calibration if quantization in ("int8", "uint8") else None,
                 route={"blocks": "auto", "whole": "saved_model"}[route])
seconds = time.perf_counter() - started
import os
size_mb = os.path.getsize(path) / 2**20
os.remove(path)
print(f"written: {size_mb:.0f} MB")
print_(json.dumps({"model": name, "quantization": quantization, "route": route, "calibration_images": images,
                  "float32_weights_mb": weights_mb, "rss_before_export_mb": before, "peak_rss_mb": peak[0],
                  "peak_over_weights": peak[0] / weights_mb, "seconds": seconds, "file_mb": size_mb}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--quantization", nargs="+", default=["int8"])
    parser.add_argument("--routes", nargs="+", default=["blocks"], choices=["blocks", "whole"])
    parser.add_argument("--images", type=int, default=4, help="calibration images")
    parser.add_argument("--stages", action="store_true", help="print the resident set at each export step")
    parser.add_argument("--output", help="a JSON file for the rows, the machine and the command")
    args = parser.parse_args()
    rows, failures = [], {}
    for name in args.models:
        for quantization in args.quantization:
            for route in args.routes:
                done = subprocess.run([sys.executable, "-c", CHILD, name, quantization, str(args.images),
                                       "1" if args.stages else "0", route], capture_output=True, text=True,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
                lines = done.stdout.strip().splitlines()
                if args.stages:
                    print("\n".join(lines[:-1]))
                if done.returncode:
                    errors = [line for line in done.stderr.splitlines() if "Error" in line] or ["?"]
                    cause = f"killed by signal {-done.returncode}" if done.returncode < 0 else errors[-1]
                    print(f"{name} {quantization} {route}: failed ({cause})")
                    failures[f"{name} {quantization} {route}"] = cause
                    continue
                row = json.loads(lines[-1])
                rows.append(row)
                print(f"{name:<12}{quantization:<9}{route:<8}weights {row['float32_weights_mb']:7.0f} MB  peak RSS "
                      f"{row['peak_rss_mb']:7.0f} MB ({row['peak_over_weights']:.1f}x)  {row['seconds']:6.0f} s",
                      flush=True)
    if args.output:
        from keras_mixer.io_utils import write_text
        from keras_mixer.machine import machine

        command = "python benchmarks/export_memory.py " + " ".join(sys.argv[1:])
        write_text(args.output, json.dumps({"machine": machine(), "command": command, "rows": rows,
                                            "failures": failures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
