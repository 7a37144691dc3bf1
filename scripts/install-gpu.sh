#!/usr/bin/env bash
# Install livemod for a GPU host into $VENV (default .venv): the project with
# onnxruntime-gpu instead of onnxruntime (never both), then verify the models.
# Dockerfile.gpu runs exactly this script, so the image and a bare host match.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
# PP-OCRv4 models; without deps so opencv-python never shadows the headless cv2.
"$VENV/bin/python" -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"
# The CPU runtime came in as a dependency; swap it for the GPU build.
"$VENV/bin/python" -m pip uninstall -q -y onnxruntime
"$VENV/bin/python" -m pip install -q "onnxruntime-gpu>=1.17"
"$VENV/bin/python" - <<'PY'
import onnxruntime as ort
from livemod.vision.providers import check_single_runtime
check_single_runtime()
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
PY
# Verify every model, then make the vision models' fp16 variants and check them against
# fp32 (vision.precision auto uses them on CUDA/TensorRT only where the check passes).
# Without a GPU here (a docker build) the check runs on the CPU; the daemon measures it
# again on its GPU provider at first start, once, and caches that report too.
"$VENV/bin/livemod" models --fp16
