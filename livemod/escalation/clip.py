"""Building the clip an LLM is shown: recent frames as JPEG, first-pass view."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from livemod.escalation.llm import Clip
from livemod.messages import Image, VideoFrame
from livemod.store import Store

JPEG_QUALITY = 85


def jpeg(image: Image, max_side: int) -> bytes:
    """An RGB frame as JPEG bytes, scaled down so its longer side is ``max_side``."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        size = (round(w * scale), round(h * scale))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data.tobytes())


async def build_clip(
    store: Store, event: dict[str, Any], frames: Sequence[VideoFrame], max_side: int
) -> Clip:
    """The clip for one committed action event. Encoding runs off the event loop;
    without frames (the session is gone) the action's evidence frame is sent."""
    scores: dict[str, float] = {}
    jpegs: list[bytes] = []
    evidence_id = event.get("evidence_id")
    record = await store.get_evidence(str(evidence_id)) if evidence_id else None
    if record is not None:
        scores = record["scores"]
    if frames:
        images = [f.image for f in frames]
        jpegs = await asyncio.to_thread(lambda: [jpeg(i, max_side) for i in images])
    elif record is not None and record.get("path"):
        jpegs = [await asyncio.to_thread(Path(str(record["path"])).read_bytes)]
    return Clip(
        stream_id=str(event.get("stream_id")),
        category=str(event.get("category")),
        action=str(event.get("action")),
        tier=str(event.get("tier")),
        confidence=float(event.get("confidence", 0.0)),
        sources=tuple(event.get("sources") or ()),
        media_time_s=float(event.get("media_time_s", 0.0)),
        jpegs=tuple(jpegs),
        scores=scores,
        transcript=str(event.get("transcript", "")),
        ocr_text=str(event.get("ocr_text", "")),
    )
