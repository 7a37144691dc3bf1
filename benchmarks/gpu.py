"""The GPU mode: every GPU figure with the CPU figure beside it, in one JSON document.

Runs the per-part benchmarks as subprocesses (each prints its own JSON, kept whole
under ``runs``) and pulls the headline numbers into ``summary``:

- vision models: frames/s per model by batch size (1..64) on CUDA at fp32 and fp16,
  and on the CPU (``models.py``);
- streams: real-time 640x360 streams at 4 fps through the daemon's own parts, with
  the micro-batcher tuned for the GPU, up to the largest count whose p95 stays under
  1 s (``latency.py``), and the same sweep on the CPU (batch of 1, the CPU default);
- speech: Whisper windows/s by batch size, float16 on CUDA and int8 on the CPU
  (``asr_batch.py``).

On a host without the CUDA provider the GPU part says why it did not run and the CPU
figures are still measured. The CPU baseline for each part is measured in the same run.

    .venv/bin/python benchmarks/gpu.py [--quick] [--levels 1,16,64,128,256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GPU_BATCHES = "1,2,4,8,16,32,64"
CPU_BATCHES = "1,2,4,8"


def cuda_available() -> tuple[bool, str]:
    import onnxruntime as ort

    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return False, f"no CUDA provider in this ONNX Runtime ({', '.join(providers)})"
    return True, ""


def run(script: str, *args: str, timeout: float = 1800.0) -> dict[str, Any]:
    """One benchmark's JSON, or what went wrong (a failed part never hides the others)."""
    cmd = [sys.executable, str(HERE / script), *args]
    print("gpu: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "command": cmd[1:]}
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "command": cmd[1:]}
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def models_summary(doc: dict[str, Any]) -> dict[str, Any]:
    if "error" in doc:
        return {"error": doc["error"][-300:]}
    return {
        r["model"]: {str(b["batch_size"]): b["frames_per_s"] for b in r["batches"]}
        for r in doc["results"]
    }


def streams_summary(doc: dict[str, Any]) -> dict[str, Any]:
    if "error" in doc:
        return {"error": doc["error"][-300:]}
    s = doc["summary"]
    at = s.get("at_sustained") or {}
    return {
        "sustained_streams_4fps": s["sustained_streams"],
        "at_sustained": at,
        "providers": doc["setting"].get("providers"),
        "batch_size": doc["setting"].get("batch_size"),
    }


def asr_summary(doc: dict[str, Any]) -> dict[str, Any]:
    if "error" in doc:
        return {"error": doc["error"][-300:]}
    return {
        "device": doc["setting"]["device"],
        "compute_type": doc["setting"]["compute_type"],
        "single_window_path_windows_per_s": doc["baseline"]["windows_per_s"],
        "windows_per_s_by_batch": {str(r["batch"]): r["windows_per_s"] for r in doc["results"]},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every part's quick mode")
    parser.add_argument("--levels", default="1,8,16,32,64,96,128,192,256,384,512")
    parser.add_argument("--cpu-levels", default="1,2,4,6,7,8,9,10")
    parser.add_argument("--batch-size", type=int, default=16, help="vision batch on the GPU")
    parser.add_argument("--batch-wait-ms", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=4, help="analysis calls at once (GPU)")
    parser.add_argument("--skip-cpu", action="store_true", help="GPU figures only")
    args = parser.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    has_gpu, reason = cuda_available()
    runs: dict[str, Any] = {}
    if has_gpu:
        batches = "1,2" if args.quick else GPU_BATCHES
        for precision in ("fp32", "fp16"):
            runs[f"models_cuda_{precision}"] = run(
                "models.py", *quick, "--providers", "cuda", "--precision", precision,
                "--batches", batches,
            )  # fmt: skip
        runs["streams_cuda"] = run(
            "latency.py", *quick, "--providers", "cuda",
            "--batch-size", str(args.batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
            "--workers", str(args.workers), "--levels", "1,2" if args.quick else args.levels,
        )  # fmt: skip
        runs["asr_cuda"] = run("asr_batch.py", *quick, "--device", "cuda")
    if not args.skip_cpu:
        runs["models_cpu"] = run(
            "models.py", *quick, "--providers", "cpu", "--batches",
            "1,2" if args.quick else CPU_BATCHES,
        )  # fmt: skip
        runs["streams_cpu"] = run(
            "latency.py", *quick, "--providers", "cpu", "--levels",
            "1,2" if args.quick else args.cpu_levels,
        )  # fmt: skip
        runs["asr_cpu"] = run("asr_batch.py", *quick, "--device", "cpu")
    summary: dict[str, Any] = {}
    for name, doc in runs.items():
        kind, _, where = name.partition("_")
        pick = {"models": models_summary, "streams": streams_summary, "asr": asr_summary}[kind]
        summary.setdefault(kind, {})[where] = pick(doc)
    out = {
        "benchmark": "livemod GPU mode",
        "setting": {
            "gpu": {"available": has_gpu, **({"reason": reason} if reason else {})},
            "quick": args.quick,
            "gpu_vision_batch": {"batch_size": args.batch_size, "wait_ms": args.batch_wait_ms},
            "p95_budget_ms": 1000,
            "fps_per_stream": 4,
        },
        "summary": summary,
        "runs": runs,
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
