"""Build the configured vision analyzers from the manifest, each on its chosen file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from livemod.errors import ModelError
from livemod.vision import openvino
from livemod.vision.base import FrameAnalyzer
from livemod.vision.kinds import ANALYZER_KINDS
from livemod.vision.manifest import ModelFile, ModelSpec
from livemod.vision.precision import PrecisionPlan, select_model


def build_vision_analyzers(
    specs: Sequence[ModelSpec],
    enabled: Sequence[str],
    threads: int,
    providers: Sequence[str] | None = None,
    *,
    precision: PrecisionPlan | None = None,
    io_binding: bool = False,
) -> list[FrameAnalyzer]:
    """One analyzer per enabled model name, chosen by the manifest entry's kind.

    ``precision`` picks each model's file (fp32, or its checked fp16 variant) and on a CPU
    its runtime; without it every model loads the manifest's fp32 file.
    """
    by_name = {spec.name: spec for spec in specs}
    analyzers: list[FrameAnalyzer] = []
    for name in enabled:
        spec = by_name.get(name)
        if spec is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ModelError(f"model {name}: enabled but not in the manifest (known: {known})")
        cls = ANALYZER_KINDS.get(spec.kind)
        if cls is None:
            kinds = ", ".join(sorted(ANALYZER_KINDS))
            raise ModelError(f"model {name}: kind {spec.kind!r} has no analyzer (known: {kinds})")
        model: ModelFile | None = None
        if precision is not None:
            plan = list(providers) if providers else ["CPUExecutionProvider"]
            model = select_model(spec, precision, providers=plan, threads=threads)
        runs_on = list(providers) if providers else None
        if model is not None and model.provider is not None:
            runs_on = [model.provider]
        analyzers.append(
            cls(
                spec,
                threads=threads,
                providers=runs_on,
                model=model,
                io_binding=io_binding,
                # TensorRT engines and OpenVINO's compiled models live beside the fp16
                # variants, keyed by model file.
                engine_cache=_engine_cache(precision, runs_on),
            )
        )
    return analyzers


def _engine_cache(precision: PrecisionPlan | None, runs_on: Sequence[str] | None) -> Path | None:
    if precision is None:
        return None
    on_openvino = runs_on is not None and runs_on[0] in openvino.PRECISIONS
    return precision.cache_dir / ("openvino" if on_openvino else "tensorrt")
