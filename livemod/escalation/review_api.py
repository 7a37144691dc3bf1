"""The review desk's request and response bodies (published in the API document)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from livemod.web import Id, RequestModel, ResponseModel

MAX_NOTE = 2000


class ClaimRequest(RequestModel):
    reviewer_id: Id


class DecideRequest(RequestModel):
    reviewer_id: Id
    decision: Literal["uphold", "overturn", "escalate"]
    note: str = Field("", max_length=MAX_NOTE)


class Review(ResponseModel):
    """One item of the human review queue."""

    id: str
    status: str
    priority: int
    level: int
    stream_id: str
    user_id: str
    room_id: str
    category: str
    severity: str


class ReviewList(ResponseModel):
    reviews: list[Review]
