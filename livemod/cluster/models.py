"""``GET /v1/cluster``: the response models (published in the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from livemod.web import ResponseModel


class ClusterInstance(ResponseModel):
    """One live instance, as its last heartbeat described it."""

    id: str = Field(description="cluster.instance_id (default host:pid)")
    http: str = Field(description="Its HTTP API, where new streams are forwarded")
    load: int = Field(ge=0, description="Pull sessions it runs")
    sessions: list[str] = Field(description="Ids of the sessions it holds the lease of")
    age_s: float = Field(ge=0, description="Seconds since its last heartbeat")


class ClusterOverview(ResponseModel):
    """The instances sharing this one's Redis (only itself when it runs alone)."""

    instance: str = Field(description="The instance that answered")
    status: Literal["ok", "degraded"]
    instances: list[ClusterInstance]
    takeovers: int = Field(ge=0, description="Sessions this instance took over from others")
    error: str | None = Field(None, description="Why the list is empty: Redis unreachable")
