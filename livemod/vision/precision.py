"""fp16 variants of the vision models: converted once, checked against fp32, cached.

A variant is made from the manifest's verified fp32 file with ONNX Runtime's own converter
(inputs and outputs stay float32, so the analyzers' pre- and post-processing do not
change) and stored in ``vision.model_cache`` under the fp32 checksum, with a JSON report
of its comparison against fp32 on the provider it will run on. Start-up reads the report
instead of measuring again; a report made for another file, runtime version, provider,
frame set or tolerance is measured again.

``vision.precision``: ``auto`` runs fp16 on CUDA/TensorRT when the report passed. On a CPU
(with ``vision.providers: auto``) it picks each model's runtime instead, ONNX Runtime or
OpenVINO in fp32 or bf16, by the same accuracy check and a timing
(``livemod.vision.cpu_runtime``). fp16 buys nothing on a CPU: ONNX Runtime's CPU provider
folds the fp16 weights back to float32 when it loads the model and runs its float32
kernels, so a frame costs the same (measured within 4%, see the README) and only the
rounding error remains; auto never converts to fp16 there. ``fp16`` runs the variant on
any provider and refuses to start when the check fails; ``fp32`` never converts anything.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from livemod.errors import ModelError
from livemod.vision import cpu_runtime, openvino
from livemod.vision.accuracy import (
    DEFAULT_TOLERANCES,
    Comparison,
    Tolerances,
    compare,
    reference_frames,
)
from livemod.vision.cache import write_atomic
from livemod.vision.kinds import ANALYZER_KINDS
from livemod.vision.manifest import ModelFile, ModelSpec, sha256_file, verify

log = logging.getLogger(__name__)

PrecisionChoice = Literal["auto", "fp32", "fp16"]

DEFAULT_CACHE = Path("~/.cache/livemod/models")
_GPU_DEVICES = ("cuda", "tensorrt")
_PROVIDER_NAMES = {
    "CPUExecutionProvider": "cpu",
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "tensorrt",
}


@dataclass(frozen=True, slots=True)
class PrecisionPlan:
    """The configured choice and where the models run (the provider plan's device)."""

    choice: PrecisionChoice = "fp32"
    device: str = "cpu"
    cache_dir: Path = DEFAULT_CACHE
    tolerances: Tolerances = DEFAULT_TOLERANCES
    cpu_runtimes: bool = False
    """Under ``auto`` on a CPU, pick each model's runtime (``livemod.vision.cpu_runtime``);
    set where ``vision.providers`` is ``auto``."""


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """One fp16 variant's comparison against fp32; stored as JSON beside the variant."""

    model: str
    fp32_sha256: str
    fp16_file: str
    fp16_sha256: str
    onnxruntime: str
    provider: str
    """The provider asked for (the report's cache key)."""
    ran_on: str
    """The provider the fp16 session actually ran on (ONNX Runtime may fall back)."""
    frames: list[str]
    tolerances: dict[str, float]
    measured: dict[str, float | int | None]
    failures: list[str]
    passed: bool
    convert_s: float
    created: str

    @classmethod
    def load(cls, path: Path) -> AccuracyReport | None:
        """The stored report, or None when there is none or it cannot be read."""
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def summary(self) -> str:
        """One line for logs and ``livemod models --fp16``."""
        parts = [f"{key} {value}" for key, value in self.measured.items()]
        return f"{'passed' if self.passed else 'FAILED'} on {self.ran_on}: {', '.join(parts)}"


def fp16_path(spec: ModelSpec, cache_dir: Path) -> Path:
    """Where the fp16 variant of ``spec`` is cached: named by its fp32 checksum."""
    return cache_dir.expanduser() / f"{spec.name}-{spec.sha256[:12]}.fp16.onnx"


def report_path(spec: ModelSpec, cache_dir: Path, provider: str) -> Path:
    """The accuracy report for the variant on one provider."""
    short = _PROVIDER_NAMES.get(provider, provider)
    return fp16_path(spec, cache_dir).with_suffix(f".{short}.json")


def convert_to_fp16(src: Path, dst: Path) -> float:
    """Write the fp16 variant of ``src`` to ``dst`` atomically; returns the seconds taken."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    started = time.perf_counter()
    try:
        model = onnx.load(str(src))
        with warnings.catch_warnings():
            # The converter warns for every weight it clamps into fp16's range; the
            # accuracy check, not a wall of warnings, says whether that mattered.
            warnings.simplefilter("ignore", UserWarning)
            converted = convert_float_to_float16(model, keep_io_types=True)
        data = converted.SerializeToString()
    except Exception as exc:  # onnx raises assorted errors for a model it cannot read
        raise ModelError(f"cannot convert {src} to fp16: {exc}") from exc
    write_atomic(dst, data)
    return time.perf_counter() - started


def check_fp16(
    spec: ModelSpec,
    fp16: Path,
    *,
    providers: list[str],
    threads: int = 1,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> tuple[Comparison, str]:
    """Compare the fp16 file with the manifest's fp32 model on the reference frames;
    returns the comparison and the provider the fp16 session ran on."""
    cls = ANALYZER_KINDS.get(spec.kind)
    if cls is None:
        raise ModelError(f"model {spec.name}: kind {spec.kind!r} has no fp16 check")
    reference = cls(spec, threads=threads, providers=providers)
    variant = cls(spec, threads=threads, providers=providers, model=ModelFile(fp16, "fp16"))
    result = compare(reference, variant, reference_frames(), tolerances)
    return result, str(variant.session.get_providers()[0])


def prepare_fp16(
    spec: ModelSpec,
    cache_dir: Path,
    *,
    providers: list[str],
    threads: int = 1,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
) -> AccuracyReport:
    """The variant's report for ``providers[0]``: read from the cache, or made now
    (convert from the verified fp32 file, compare, store both)."""
    import onnxruntime as ort

    src = verify(spec)
    dst = fp16_path(spec, cache_dir)
    where = report_path(spec, cache_dir, providers[0])
    frames = [name for name, _ in reference_frames()]
    limits = dataclasses.asdict(tolerances)
    cached = AccuracyReport.load(where)
    if (
        cached is not None
        and (cached.fp32_sha256, cached.onnxruntime, cached.provider)
        == (spec.sha256, ort.__version__, providers[0])
        and (cached.frames, cached.tolerances) == (frames, limits)
        and dst.is_file()
        and sha256_file(dst) == cached.fp16_sha256
    ):
        return cached
    # No report that vouches for the file as it is now: make the file again from the
    # verified fp32 model (a cache entry someone changed is never trusted), then check it.
    convert_s = convert_to_fp16(src, dst)
    result, ran_on = check_fp16(
        spec, dst, providers=providers, threads=threads, tolerances=tolerances
    )
    report = AccuracyReport(
        model=spec.name,
        fp32_sha256=spec.sha256,
        fp16_file=dst.name,
        fp16_sha256=sha256_file(dst),
        onnxruntime=ort.__version__,
        provider=providers[0],
        ran_on=ran_on,
        frames=frames,
        tolerances=limits,
        measured=result.measured,
        failures=list(result.failures),
        passed=result.passed,
        convert_s=round(convert_s, 3),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    write_atomic(where, (json.dumps(dataclasses.asdict(report), indent=2) + "\n").encode())
    log.info("fp16 variant of %s checked: %s", spec.name, report.summary())
    return report


def select_model(
    spec: ModelSpec, plan: PrecisionPlan, *, providers: list[str], threads: int = 1
) -> ModelFile:
    """The file an analyzer loads for ``spec`` under ``plan``; logs the choice once."""
    fp32 = ModelFile(verify(spec), "fp32")
    if providers and providers[0] == openvino.PROVIDER:
        log.info("model %s runs at bf16 on OpenVINO (vision.providers=openvino)", spec.name)
        return ModelFile(fp32.path, "bf16")
    if plan.choice == "auto" and plan.device not in _GPU_DEVICES and plan.cpu_runtimes:
        return _cpu_runtime(spec, plan, fp32, threads)
    if plan.choice == "fp32" or (plan.choice == "auto" and plan.device not in _GPU_DEVICES):
        why = "configured" if plan.choice == "fp32" else f"auto on {plan.device}"
        log.info("model %s runs at fp32 (%s)", spec.name, why)
        return fp32
    try:
        report = prepare_fp16(
            spec, plan.cache_dir, providers=providers, threads=threads, tolerances=plan.tolerances
        )
    except ModelError as exc:
        if plan.choice == "fp16":
            raise
        log.warning("model %s runs at fp32: no fp16 variant (%s)", spec.name, exc)
        return fp32
    if report.passed:
        log.info("model %s runs at fp16 (%s)", spec.name, report.summary())
        return ModelFile(fp16_path(spec, plan.cache_dir), "fp16")
    where = report_path(spec, plan.cache_dir, providers[0])
    if plan.choice == "fp16":
        raise ModelError(
            f"model {spec.name}: vision.precision=fp16, but the fp16 variant drifts from fp32 "
            f"beyond tolerance ({'; '.join(report.failures[:3])}); report: {where}. "
            "Use vision.precision auto or fp32."
        )
    log.warning("model %s runs at fp32: fp16 fails its accuracy check (%s)", spec.name, where)
    return fp32


def _cpu_runtime(spec: ModelSpec, plan: PrecisionPlan, fp32: ModelFile, threads: int) -> ModelFile:
    try:
        report = cpu_runtime.prepare(
            spec, plan.cache_dir, threads=threads, tolerances=plan.tolerances
        )
    except ModelError as exc:
        log.warning("model %s runs at fp32 on ONNX Runtime: %s", spec.name, exc)
        return fp32
    choice = report.choice
    log.info("model %s runs on %s", spec.name, report.summary())
    if choice.provider == cpu_runtime.ORT_CPU:
        return fp32
    return ModelFile(fp32.path, choice.precision, choice.provider)


def report_dict(report: AccuracyReport) -> dict[str, Any]:
    """The report as stored (for ``--json`` listings)."""
    return dataclasses.asdict(report)
