"""The review desk: fills the review queue, serves it over HTTP, and applies
reviewers' decisions to the standing actions live.

Routes (bearer-protected like every ``/v1`` route):

- ``GET /v1/reviews[?status=open|pending|claimed|decided|all&level=N&limit=N]``
- ``GET /v1/reviews/{id}``
- ``POST /v1/reviews/{id}/claim`` ``{"reviewer_id"}``
- ``POST /v1/reviews/{id}/decide`` ``{"reviewer_id", "decision", "note"?}`` with
  ``decision`` one of ``uphold`` (the action stands), ``overturn`` (the action is
  lifted at once: a ``stop`` event) or ``escalate`` (back in the queue, one level up)

Every claim and decision is committed as a ``review`` event: the audit trail.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from livemod import metrics
from livemod.errors import RequestError
from livemod.escalation.ledger import CursorKeeper, ReviewLedger
from livemod.escalation.review import (
    STATUSES,
    Decision,
    NewReview,
    ReviewBackend,
    ReviewQueue,
)
from livemod.escalation.review_api import ClaimRequest, DecideRequest, Review, ReviewList
from livemod.escalation.verdict import Verdict
from livemod.events.follow import follow
from livemod.events.types import ReviewEvent, ReviewState
from livemod.messages import VideoFrame
from livemod.pipeline.standing import (
    channel_of,
    key_of,
    publish_decisions,
    recent_frames,
    standing_action,
)
from livemod.policy.taxonomy import severity
from livemod.store import EvidenceInput
from livemod.web import json_body, parse, respond

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

REVIEW_FRAMES = 4


class ReviewDesk:
    """A daemon component (always on): the review queue and its routes."""

    name = "review"

    def __init__(self) -> None:
        self._runtime: Runtime | None = None
        self._queue: ReviewBackend | None = None
        self._shared: ReviewBackend | None = None
        self._task: asyncio.Task[None] | None = None
        self._cursor: CursorKeeper | None = None
        self._defer: Callable[[dict[str, Any]], bool] = lambda event: False

    def defer_to(self, predicate: Callable[[dict[str, Any]], bool]) -> None:
        """First-pass ``review`` actions for which ``predicate`` is true are left to
        another component (the escalator asks the LLM first and queues them itself)."""
        self._defer = predicate

    def share_queue(self, backend: ReviewBackend) -> None:
        """Keep items in ``backend`` (one queue for every instance of a cluster)
        instead of this process's store; called before :meth:`start`. Each instance
        then queues only the review actions it appended itself."""
        self._shared = backend

    @property
    def queue(self) -> ReviewBackend:
        if self._queue is None:
            raise RuntimeError("review desk is not started")
        return self._queue

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("review desk is not started")
        return self._runtime

    async def start(self, runtime: Runtime) -> None:
        self._runtime = runtime
        local = ReviewQueue(runtime.store)
        await local.open()  # the table the ledger reads, also when the queue is shared
        self._queue = self._shared or local
        if self._shared is not None:
            await self._shared.open()
        await self._update_depth()
        # A durable cursor (ledger.py): a policy review committed just before a kill
        # still gets its queue item after the restart, and never two.
        ledger = ReviewLedger(runtime.store)
        point = await ledger.resume()
        self._cursor = CursorKeeper(ledger, point.cursor)
        self._cursor.start()
        self._task = asyncio.create_task(
            self._follow(point.cursor, point.settled), name="review-follow"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._cursor is not None:
            await self._cursor.close()
            self._cursor = None

    async def _follow(self, since: int, settled: set[int]) -> None:
        cursor = self._cursor
        assert cursor is not None
        shared = self._shared is not None
        async for event in follow(self.runtime.hub, since, local_only=shared):
            seq = int(event["seq"])
            wanted = (
                event.get("type") == "action"
                and event.get("action") == "review"
                and event.get("state") == "start"
                and "origin" not in event
                and seq not in settled
                and not self._defer(event)
            )
            cursor.observe(seq, escalate=wanted)
            if not wanted:
                continue
            try:
                await self.submit(event, reason="policy_review")
            except Exception:  # one bad item must not stop the queue
                log.exception("could not queue a review", extra={"seq": seq})
            finally:
                cursor.settle(seq)

    async def submit(
        self,
        event: dict[str, Any],
        *,
        reason: str,
        frames: Sequence[VideoFrame] | None = None,
        scores: dict[str, float] | None = None,
        verdict: Verdict | None = None,
        transcript: str = "",
        ocr_text: str = "",
    ) -> dict[str, Any]:
        """Queue the clip behind a committed action event for a person to judge."""
        runtime = self.runtime
        stream_id = str(event.get("stream_id"))
        category = str(event.get("category"))
        if frames is None:
            frames = recent_frames(runtime, stream_id, REVIEW_FRAMES)
        evidence_ids = [event["evidence_id"]] if event.get("evidence_id") else []
        for frame in frames:
            evidence_ids.append(
                await runtime.store.add_evidence(
                    EvidenceInput(stream_id, category, frame.media_time_s, {}, frame.image)
                )
            )
        if scores is None and event.get("evidence_id"):
            record = await runtime.store.get_evidence(str(event["evidence_id"]))
            scores = record["scores"] if record else {}
        risk = float(event.get("confidence", 0.0))
        if verdict is not None and verdict.unsafe:
            risk = max(risk, verdict.confidence)
        item = await self.queue.add(
            NewReview(
                stream_id=stream_id,
                user_id=str(event.get("user_id")),
                room_id=str(event.get("room_id")),
                category=category,
                severity=severity(risk),
                reason=reason,
                possible_minor=verdict.possible_minor if verdict is not None else False,
                detail={
                    "action": event.get("action"),
                    "channel": channel_of(event),
                    "action_seq": event.get("seq"),
                    "tier": event.get("tier"),
                    "confidence": event.get("confidence"),
                    "sources": event.get("sources", []),
                    "media_time_s": event.get("media_time_s"),
                    "evidence_id": event.get("evidence_id"),
                    "evidence_ids": evidence_ids,
                    "scores": scores or {},
                    "transcript": transcript,
                    "ocr_text": ocr_text,
                    "verdict": verdict.as_dict() if verdict is not None else None,
                },
            )
        )
        metrics.REVIEWS.labels("queued").inc()
        await self._audit(item, "queued")
        await self._update_depth()
        return item

    async def _audit(
        self, item: dict[str, Any], state: ReviewState, **extra: Any
    ) -> dict[str, Any]:
        body = ReviewEvent(
            state=state,
            review_id=item["id"],
            stream_id=item["stream_id"],
            user_id=item["user_id"],
            room_id=item["room_id"],
            category=item["category"],
            severity=item["severity"],
            reason=item["reason"],
            level=item["level"],
            action_seq=item.get("action_seq"),
            evidence_id=item.get("evidence_id"),
            **extra,
        )
        return await self.runtime.hub.publish(body)

    async def _update_depth(self) -> None:
        metrics.QUEUE_DEPTH.labels("review").set(await self.queue.open_count())

    async def claim(self, review_id: str, reviewer: str) -> dict[str, Any]:
        item = await self.queue.claim(review_id, reviewer)
        metrics.REVIEWS.labels("claimed").inc()
        await self._audit(item, "claimed", reviewer_id=reviewer)
        return item

    async def decide(
        self, review_id: str, reviewer: str, decision: Decision, note: str = ""
    ) -> dict[str, Any]:
        """Record the decision, then apply it to the standing action live."""
        item = await self.queue.decide(review_id, reviewer, decision, note)
        metrics.REVIEWS.labels(decision).inc()
        runtime = self.runtime
        key, channel = key_of(item), str(item.get("channel", "video"))
        lifted: list[dict[str, Any]] = []
        if decision == "overturn":
            stop = runtime.engine.release(key, item["category"], t_now=time.time(), channel=channel)
            if stop is not None:
                lifted = await publish_decisions(
                    runtime, [stop], item, origin="review", extra={"review_id": item["id"]}
                )
        audit = await self._audit(
            item,
            "escalated" if decision == "escalate" else "decided",
            decision=decision,
            reviewer_id=reviewer,
            note=note,
            standing=standing_action(runtime, key, item["category"], channel),
            lifted_seq=lifted[0]["seq"] if lifted else None,
        )
        await self._update_depth()
        return {**item, "audit_seq": audit["seq"], "lifted_seq": audit["lifted_seq"]}

    # -- HTTP ---------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/reviews", self._list)
        app.router.add_get("/v1/reviews/{id}", self._get)
        app.router.add_post("/v1/reviews/{id}/claim", self._claim)
        app.router.add_post("/v1/reviews/{id}/decide", self._decide)

    async def _list(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "open")
        if status not in (*STATUSES, "open", "all"):
            raise RequestError("status: one of pending, claimed, decided, open, all", status=422)
        level = _int_param(request, "level", None, 0, 100)
        limit = _int_param(request, "limit", 100, 1, 1000)
        items = await self.queue.list(status=status, level=level, limit=limit or 100)
        return respond(ReviewList, {"reviews": items})

    async def _get(self, request: web.Request) -> web.Response:
        return respond(Review, await self.queue.get(request.match_info["id"]))

    async def _claim(self, request: web.Request) -> web.Response:
        body = parse(ClaimRequest, await json_body(request))
        item = await self.claim(request.match_info["id"], body.reviewer_id)
        return respond(Review, item)

    async def _decide(self, request: web.Request) -> web.Response:
        body = parse(DecideRequest, await json_body(request))
        item = await self.decide(
            request.match_info["id"], body.reviewer_id, body.decision, body.note
        )
        return respond(Review, item)


def _int_param(
    request: web.Request, name: str, default: int | None, lo: int, hi: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise RequestError(f"{name}: an integer from {lo} to {hi}", status=422)
    return int(raw)
