"""``livemod scan``: moderate a recorded file (or a URL) to its end and report.

The same session, analyzers and vote as the live daemon, with backpressure instead
of drops, so the report's ``actions`` are the events the daemon would emit. With
``asr.enabled`` the audio is transcribed and judged too; the decoder then waits for
Whisper whenever more than a few seconds of speech are pending, so a file read faster
than real time loses no speech.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from livemod.app.build import build_analyzers, build_stages
from livemod.config import Config
from livemod.events.hub import EventHub
from livemod.messages import FrameAnalysis
from livemod.pipeline.analysis import AnalysisService
from livemod.pipeline.session import Session, SessionInfo
from livemod.policy.taxonomy import load_policy, severity
from livemod.policy.vote import VoteEngine
from livemod.speech.moderator import build_speech
from livemod.store import Store
from livemod.vision.batching import BatchPolicy


def _target_url(target: str) -> str:
    if "://" in target:
        return target
    return "file://" + str(Path(target).resolve())


async def scan(
    config: Config,
    target: str,
    *,
    realtime: bool = False,
    on_sample: Callable[[FrameAnalysis], None] | None = None,
) -> dict[str, Any]:
    """Moderate ``target`` to its end; ``on_sample`` sees each analyzed sample
    (the CLI's progress bar)."""
    policy = load_policy(config.policy)
    analysis = AnalysisService(
        build_analyzers(config),
        stages=build_stages(config),
        workers=config.vision.workers,
        batch=BatchPolicy(config.vision.batch_size, config.vision.batch_wait_ms / 1000.0),
        capacity=config.capacity,
    )
    speech = build_speech(config, policy)
    samples: list[dict[str, Any]] = []

    def record(a: FrameAnalysis) -> None:
        if on_sample is not None:
            on_sample(a)
        samples.append(
            {
                "media_time_s": round(a.frame.media_time_s, 3),
                "scores": {k: round(v, 4) for k, v in a.scores.items()},
                "signals": [
                    {"category": s.category, "score": round(s.score, 4), "source": s.source}
                    for s in a.signals
                ],
            }
        )

    with tempfile.TemporaryDirectory(prefix="livemod-scan-") as tmp:
        store = Store(Path(tmp) / "scan.db", Path(tmp) / "evidence")
        await store.open()
        try:
            hub = EventHub(store)
            info = SessionInfo(
                id="scan",
                user_id="scan",
                room_id="scan",
                url=_target_url(target),
                realtime=realtime,
                relay=False,  # a scan reports; it never relays, whatever relay.enabled says
            )
            session = Session(
                info,
                config,
                analysis,
                VoteEngine(policy),
                hub,
                blocking=True,
                on_analysis=record,
                speech=speech,
            )
            started = time.monotonic()
            end = await session.run()
            elapsed = time.monotonic() - started
        finally:
            await store.close()
            analysis.close()
            if speech is not None:
                speech.close()
    risk = round(session.peak_risk, 4)
    return {
        "target": target,
        "status": "ok" if end.reason != "error" else "error",
        "error": end.error,
        "frames_decoded": end.frames_decoded,
        "samples_analyzed": len(samples),
        "elapsed_s": round(elapsed, 3),
        "risk_score": risk,
        "severity": severity(risk),
        "flagged_media_times": session.flagged,
        "audio": session.audio,
        "speech": session.speech_stats(),
        "actions": session.actions,
        "samples": samples,
    }


def render_text(report: dict[str, Any]) -> str:
    lines = [f"scan of {report['target']}: {report['status']}"]
    if report["error"]:
        lines.append(f"  error: {report['error']}")
    lines.append(
        f"  {report['frames_decoded']} frames decoded, {report['samples_analyzed']} analyzed"
        f" in {report['elapsed_s']} s"
    )
    lines.append(f"  risk_score {report['risk_score']} ({report['severity']})")
    speech = report.get("speech")
    if speech is not None:
        lines.append(
            f"  speech: {speech['words']} words transcribed in {speech['decodes']} Whisper"
            f" windows, {speech['hits']} policy hits"
        )
    elif report.get("audio") not in (None, "off"):
        lines.append(f"  audio: {report['audio']}")
    for event in report["actions"]:
        lines.append(
            f"  {event['media_time_s']:>8.2f}s  {event['action']:<6} {event['state']:<5}"
            f" {event['category']} conf={event['confidence']} tier={event['tier']}"
            f" sources={','.join(event['sources'])}"
        )
    return "\n".join(lines) + "\n"
