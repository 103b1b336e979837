#!/usr/bin/env bash
# Compile an int8 .tflite for the Coral Edge TPU and report what maps.
#   bash deploy/compile_edgetpu.sh runs/demo/model_int8_edgetpu.tflite [out_dir]
# Needs `edgetpu_compiler` (x86-64 Debian/Ubuntu, from Coral's apt repository; see deploy/README.md).
set -euo pipefail
model="${1:?usage: compile_edgetpu.sh MODEL.tflite [OUT_DIR]}"
out="${2:-$(dirname "$model")}"

keras-mixer edgetpu-check "$model" | tail -n 3
if ! command -v edgetpu_compiler >/dev/null; then
  echo "edgetpu_compiler not found: install it from Coral's apt repository (deploy/README.md)" >&2
  exit 1
fi
edgetpu_compiler -s -o "$out" "$model"
echo "compiled: $out/$(basename "${model%.tflite}")_edgetpu.tflite"
