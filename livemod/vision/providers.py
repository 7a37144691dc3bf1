"""Which ONNX Runtime execution providers to use, decided once at start-up.

``auto`` takes TensorRT, then CUDA, when the installed runtime offers them, and
falls back to the CPU with one clear log line. ``onnxruntime`` and
``onnxruntime-gpu`` must never be installed together: they write the same files
and shadow each other silently, so start-up refuses that state.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass
from typing import Literal

from livemod.errors import ConfigError
from livemod.vision import openvino

log = logging.getLogger(__name__)

ProviderChoice = Literal["auto", "cpu", "cuda", "tensorrt", "openvino"]

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TRT = "TensorrtExecutionProvider"

_RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """The providers handed to every InferenceSession, best first."""

    providers: tuple[str, ...]
    device: str
    """``cpu``, ``cuda`` or ``tensorrt``: what the first provider runs on."""
    fallback_reason: str | None = None


def installed_runtimes() -> list[str]:
    found = []
    for name in _RUNTIME_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def check_single_runtime() -> None:
    runtimes = installed_runtimes()
    if len(runtimes) > 1:
        raise ConfigError(
            "both onnxruntime and onnxruntime-gpu are installed; they shadow each other. "
            "Keep one: pip uninstall -y onnxruntime onnxruntime-gpu && "
            "pip install onnxruntime-gpu (GPU hosts) or onnxruntime (CPU hosts)"
        )


def plan(
    choice: ProviderChoice, available: list[str], *, openvino_bf16: bool = False
) -> ProviderPlan:
    """Pure: the provider list for a configured choice, what the runtime offers and
    whether OpenVINO can run bf16 on this CPU (``vision.providers: openvino`` only)."""
    if choice == "cpu":
        return ProviderPlan((_CPU,), "cpu")
    if choice == "openvino":
        if openvino_bf16:
            return ProviderPlan((openvino.PROVIDER,), "cpu")
        missing = "vision.providers=openvino but OpenVINO or this CPU's bf16 is missing"
        return ProviderPlan((_CPU,), "cpu", missing)
    wanted: list[str] = []
    if choice in ("auto", "tensorrt") and _TRT in available:
        wanted.append(_TRT)
    if choice in ("auto", "tensorrt", "cuda") and _CUDA in available:
        wanted.append(_CUDA)
    if not wanted:
        reason = None
        if choice != "auto":
            reason = f"vision.providers={choice} but this ONNX Runtime offers only {available}"
        elif _CUDA not in available:
            reason = "no CUDA provider in this ONNX Runtime (install onnxruntime-gpu on GPU hosts)"
        return ProviderPlan((_CPU,), "cpu", reason)
    device = "tensorrt" if wanted[0] == _TRT else "cuda"
    return ProviderPlan((*wanted, _CPU), device)


def resolve(choice: ProviderChoice) -> ProviderPlan:
    """Check the installation, pick providers, and say so once in the log."""
    import onnxruntime as ort

    check_single_runtime()
    bf16 = choice == "openvino" and openvino.bf16_capable()
    result = plan(choice, list(ort.get_available_providers()), openvino_bf16=bf16)
    if result.fallback_reason:
        log.info("inference on CPU: %s", result.fallback_reason)
    else:
        log.info("inference providers: %s", ", ".join(result.providers))
    return result
