"""What the configuration enables: analyzers, per-stream stages and components.

Every model is loaded and verified here, at start-up, so a missing or corrupt
model file stops the daemon with one clear error instead of failing a stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from livemod import metrics
from livemod.config import Config
from livemod.pipeline.runtime import Component
from livemod.vision import providers
from livemod.vision.base import FrameAnalyzer, StreamStage

if TYPE_CHECKING:
    from livemod.vision.hashlists import ListSpec


def build_analyzers(config: Config) -> list[FrameAnalyzer]:
    """Load and verify every configured model and the known-bad index."""
    from livemod.vision.analyzers import build_vision_analyzers
    from livemod.vision.inference import use_io_binding
    from livemod.vision.known_bad import KnownBadAnalyzer
    from livemod.vision.manifest import load_manifest
    from livemod.vision.precision import PrecisionPlan

    analyzers: list[FrameAnalyzer] = []
    known = config.known_bad
    analyzers.append(
        KnownBadAnalyzer(
            known_bad_specs(config),
            max_regions=known.max_regions,
            min_quality=known.min_quality,
            feature_pictures=known.feature_pictures,
            features_every=known.features_every,
        )
    )
    metrics.MODELS_LOADED.labels("hash").set(1)
    if config.vision.models:
        specs = load_manifest(config.vision.manifest)
        plan = providers.resolve(config.vision.providers)
        metrics.INFERENCE_DEVICE.labels(plan.device).set(1)
        vision = build_vision_analyzers(
            specs,
            config.vision.models,
            config.vision.threads,
            plan.providers,
            precision=PrecisionPlan(
                config.vision.precision,
                plan.device,
                config.vision.model_cache,
                cpu_runtimes=config.vision.providers == "auto",
            ),
            io_binding=use_io_binding(config.vision.io_binding, plan.device),
        )
        for analyzer in vision:
            metrics.MODELS_LOADED.labels(analyzer.name).set(1)
            precision = getattr(analyzer, "precision", None)
            if precision is not None:
                metrics.MODEL_PRECISION.labels(analyzer.name, precision).set(1)
        analyzers.extend(vision)
    return analyzers


def known_bad_specs(config: Config) -> list[ListSpec]:
    """The configured known-bad lists: ``known_bad.paths`` as ``default``, then ``lists``."""
    from livemod.vision.hashlists import ListSpec

    known = config.known_bad
    specs = [ListSpec("default", tuple(known.paths), known.max_distance, known.phash_max_distance)]
    for item in known.lists:
        distance = item.max_distance if item.max_distance is not None else known.max_distance
        specs.append(ListSpec(item.name, tuple(item.paths), distance, known.phash_max_distance))
    return specs


def build_stages(config: Config) -> list[StreamStage]:
    """Per-stream analysis stages the configuration enables (OCR, the LLM sweep)."""
    from livemod.escalation.sweep import LlmSweep, sweep_enabled

    stages: list[StreamStage] = []
    if config.ocr.enabled:
        from livemod.ocr.stage import build_ocr_stage

        stages.append(build_ocr_stage(config))
    if sweep_enabled(config):
        stages.append(LlmSweep(config))
    return stages


def build_components(config: Config, stages: Sequence[StreamStage] = ()) -> list[Component]:
    """The optional parts this configuration enables, in start order (a stage that is also
    a component, the LLM sweep, among them)."""
    from livemod.actions.webhooks import WebhookSender
    from livemod.app.console import Console
    from livemod.escalation.desk import ReviewDesk
    from livemod.escalation.escalator import Escalator
    from livemod.escalation.sweep import LlmSweep

    components: list[Component] = [Console(config)]
    # The review queue is always on: the policy's ``review`` action feeds it.
    desk = ReviewDesk()
    components.append(desk)
    if config.llm.base_url is not None:
        escalator = Escalator(config, desk)
        components.append(escalator)
        for stage in stages:
            if isinstance(stage, LlmSweep):
                # After the escalator: it shares its client, breaker and rate limit.
                stage.attach(escalator.llm)
                components.append(stage)
    if config.webhooks.urls:
        components.append(WebhookSender(config.webhooks))
    if config.hooks.enabled:
        from livemod.app.hooks import StreamingServerHooks

        components.append(StreamingServerHooks(config))
    if config.whip.enabled:
        from livemod.app.whip import WhipIngest

        components.append(WhipIngest(config))
    return components
