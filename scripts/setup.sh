#!/usr/bin/env bash
# Set up everything livemod and its tests need on a fresh Debian machine:
# Debian packages (when missing), then a .venv with the project and dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(ffmpeg)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# onnxruntime and onnxruntime-gpu shadow each other when both are installed.
if .venv/bin/python -m pip show -q onnxruntime-gpu >/dev/null 2>&1 \
    && .venv/bin/python -m pip show -q onnxruntime >/dev/null 2>&1; then
    echo "setup: both onnxruntime and onnxruntime-gpu are installed; removing onnxruntime-gpu" >&2
    .venv/bin/python -m pip uninstall -q -y onnxruntime-gpu
fi
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m livemod models >/dev/null || {
    echo "setup: model verification failed; run: .venv/bin/livemod models" >&2
    exit 1
}
echo "setup: ok"
