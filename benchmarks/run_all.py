"""Run every benchmark, one after the other, and print one JSON document holding each
one's output under its name.

They run one at a time, each in its own process, so they never compete for the
cores. ``--quick`` is passed on to each.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only latency,overload]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "hashing",
    "models",
    "latency",
    "overload",
    "batching",
    "decode",
    "handoff",
    "asr",
    "asr_batch",
)
OPTIONAL = ("ocr", "whip", "rtmp", "escalation", "detection")
"""Other parts' benchmarks, run too when their script is there (same --quick contract)."""


def run_one(name: str, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = round(time.monotonic() - started, 1)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:], "s": elapsed}
    result: dict[str, Any] = json.loads(proc.stdout)
    result["elapsed_s"] = elapsed
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument(
        "--only", default="", help="comma-separated subset of " + ",".join((*BENCHMARKS, *OPTIONAL))
    )
    args = parser.parse_args(argv)
    known = [*BENCHMARKS, *(n for n in OPTIONAL if (HERE / f"{n}.py").exists())]
    names = [n for n in args.only.split(",") if n] or known
    unknown = set(names) - set(known)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    results = {}
    for name in names:
        print(f"run_all: {name} ...", file=sys.stderr, flush=True)
        results[name] = run_one(name, args.quick)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
