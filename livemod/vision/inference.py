"""ONNX Runtime sessions and the runner every vision analyzer calls instead of ``session.run``.

On a GPU the runner feeds each call through IOBinding: the input goes into a device buffer
that is kept and reused for the next batch of the same shape (no allocation per call), and
the outputs are bound to host memory, which is where post-processing reads them. On a CPU
IOBinding saves nothing (the input already sits where the kernels read it), so the runner
calls ``session.run`` unless told otherwise (tests force the bound path there).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from livemod.errors import ModelError
from livemod.vision import openvino

IoBindingChoice = Literal["auto", "on", "off"]

MAX_BUFFERED_SHAPES = 8
"""Input buffers kept per thread and session. The micro-batcher mostly sends full batches
and sometimes a partial one, so a few shapes cover nearly every call; the least recently
used buffer goes beyond that, which bounds device memory when batch sizes vary."""

_GPU_DEVICES = ("cuda", "tensorrt")
_ON_DEVICE = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}


ProviderEntry = str | tuple[str, dict[str, str]]


def provider_entries(providers: list[str], engine_cache: Path | None) -> list[ProviderEntry]:
    """Pure: the providers as ONNX Runtime takes them, with options where livemod sets any.

    TensorRT builds an engine per model and input shape when a session starts, which
    takes minutes for a large model; with ``engine_cache`` it keeps the engines (and its
    kernel timing cache) in that folder, so a restart loads them instead of rebuilding.
    """
    entries: list[ProviderEntry] = []
    for name in providers:
        if name == "TensorrtExecutionProvider" and engine_cache is not None:
            path = str(engine_cache.expanduser())
            options = {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": path,
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": path,
            }
            entries.append((name, options))
        else:
            entries.append(name)
    return entries


def make_session(
    path: Path,
    threads: int,
    providers: list[str] | None = None,
    *,
    engine_cache: Path | None = None,
) -> ort.InferenceSession:
    """One ``onnxruntime.InferenceSession`` with pinned threads (it is safe to share).

    ``engine_cache``: where TensorRT keeps its built engines (see ``provider_entries``), or
    OpenVINO its compiled models."""
    if providers and providers[0] in openvino.PRECISIONS:
        # Duck-typed: the subset of InferenceSession the analyzers call.
        session = openvino.OpenVinoSession(path, threads, providers[0], cache_dir=engine_cache)
        return cast(ort.InferenceSession, session)
    opts = ort.SessionOptions()
    # Pinned and sequential, so several analyzers on one host do not oversubscribe cores.
    opts.intra_op_num_threads = max(1, threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if providers is None:
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
    entries = provider_entries(providers, engine_cache)
    if engine_cache is not None and any(isinstance(e, tuple) for e in entries):
        engine_cache.expanduser().mkdir(parents=True, exist_ok=True)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=entries)
    except Exception as exc:  # onnxruntime raises its own untyped pybind errors
        raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc


def use_io_binding(choice: IoBindingChoice, device: str) -> bool:
    """Pure: whether sessions on ``device`` (cpu, cuda, tensorrt) run through IOBinding."""
    if choice == "auto":
        return device in _GPU_DEVICES
    return choice == "on"


def session_device(session: ort.InferenceSession) -> str:
    """Where the session's first provider keeps tensors: ``cuda`` or ``cpu``."""
    return _ON_DEVICE.get(str(session.get_providers()[0]), "cpu")


class SessionRunner:
    """Runs one session, through IOBinding or ``session.run``; safe to call from any thread.

    ``session.run`` is thread-safe; an ``IOBinding`` and a device buffer are not (two calls
    writing one buffer would feed each other's frames). So every call builds its own binding
    (a small host object, cheap next to inference) and takes input buffers from a cache
    private to its thread: the executor's threads never share a buffer and never wait on a
    lock, and concurrent calls still overlap inside ONNX Runtime.
    """

    def __init__(self, session: ort.InferenceSession, *, io_binding: bool) -> None:
        self.session = session
        self.io_binding = io_binding
        self.device = session_device(session)
        self._outputs = [o.name for o in session.get_outputs()]
        self._local = threading.local()

    def run(self, feeds: Mapping[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
        """All outputs, in the model's order, as host arrays."""
        if not self.io_binding:
            return list(self.session.run(None, dict(feeds)))
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, self._buffer(name, array))
        for name in self._outputs:
            # Post-processing (decoding, NMS) runs on the host: let ONNX Runtime copy the
            # outputs there itself rather than hand back device tensors to copy again.
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return [np.asarray(value) for value in binding.copy_outputs_to_cpu()]

    def _buffer(self, name: str, array: npt.NDArray[Any]) -> ort.OrtValue:
        cache: OrderedDict[tuple[str, tuple[int, ...], str], ort.OrtValue] | None
        cache = getattr(self._local, "buffers", None)
        if cache is None:
            cache = self._local.buffers = OrderedDict()
        array = np.ascontiguousarray(array)
        key = (name, tuple(array.shape), array.dtype.str)
        value = cache.get(key)
        if value is None:
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                list(array.shape), array.dtype.type, self.device, 0
            )
            cache[key] = value
            while len(cache) > MAX_BUFFERED_SHAPES:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        # One host-to-device copy into memory allocated once; the buffer stays bound to
        # this thread, so nothing else writes it before the run below reads it.
        value.update_inplace(array)
        return value

    def buffered_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with a buffer on the calling thread (for tests and diagnostics)."""
        cache = getattr(self._local, "buffers", None) or {}
        return [shape for _, shape, _ in cache]
