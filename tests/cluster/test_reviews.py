"""One review queue for the cluster: two real ``livemod serve`` instances on one real
Redis. A review action decided on a queues one item, listed on b; a claim on a makes
b's claim answer 409; a decision on b is seen on a; the evidence links point at a."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from livemod.cluster.node import PLACED_HEADER
from livemod.cluster.reviews import RedisReviewQueue
from livemod.config import DEFAULT_POLICY
from livemod.errors import RequestError
from livemod.escalation.review import NewReview
from tests.cluster.conftest import instance
from tests.cluster.support import running, until
from tests.conftest import DaemonProcess
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

KNOWN_BAD_PAUSE = "actions: {high: pause, medium: pause, low: review}"


@pytest.fixture
def pair(
    tmp_path: Path, known_bad_dir: Path, redis_server: RedisServer
) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    # A known-bad match asks for a person here (review) instead of pausing.
    policy = Path(DEFAULT_POLICY).read_text()
    assert KNOWN_BAD_PAUSE in policy
    path = tmp_path / "policy.yaml"
    path.write_text(policy.replace(KNOWN_BAD_PAUSE, "actions: {high: review, medium: review}"))
    env = {"LIVEMOD_POLICY": str(path)}
    a = instance(tmp_path, "a", known_bad_dir, redis_server, **env)
    b = instance(tmp_path, "b", known_bad_dir, redis_server, **env)
    with running(a, b):
        yield a, b


async def call(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, **kw) as resp:
        return resp.status, await resp.json()


async def test_items_claims_and_decisions_are_cluster_wide(
    pair: tuple[DaemonProcess, DaemonProcess], violation_clip: Path, tmp_path: Path
) -> None:
    a, b = pair
    clip = tmp_path / "violation.mp4"
    os.link(violation_clip, clip)  # under the instances' file roots
    async with aiohttp.ClientSession() as http:
        body = {"url": str(clip), "user_id": "u7", "room_id": "room-7"}
        # Placed on a on purpose (the header says it was placed already).
        headers = {PLACED_HEADER: "t"}
        status, created = await call(http, "POST", f"{a.base}/v1/streams", body, headers=headers)
        assert status == 201, created

        async def listed_on_b() -> list[dict[str, Any]]:
            _, listing = await call(http, "GET", f"{b.base}/v1/reviews")
            return list(listing["reviews"])

        (item,) = await until(listed_on_b, 25, "a's review item listed on b")
        assert item["stream_id"] == created["id"] and item["category"] == "known_bad"
        # The evidence stays on a: the item says so and its links go there.
        assert item["evidence_instance"] == "a" and item["evidence_url"] == a.base
        assert item["evidence"] and item["evidence"][0]["image"].startswith(a.base)
        async with http.get(item["evidence"][0]["image"]) as resp:
            assert resp.status == 200 and (await resp.read())[:2] == b"\xff\xd8"
        # Queued once for the cluster, whichever instance is asked.
        _, on_a = await call(http, "GET", f"{a.base}/v1/reviews?status=all")
        assert [i["id"] for i in on_a["reviews"]] == [item["id"]]

        rid = item["id"]
        status, claimed = await call(
            http, "POST", f"{a.base}/v1/reviews/{rid}/claim", {"reviewer_id": "ann"}
        )
        assert status == 200 and claimed["claimed_by"] == "ann"
        status, err = await call(
            http, "POST", f"{b.base}/v1/reviews/{rid}/claim", {"reviewer_id": "bob"}
        )
        assert status == 409 and "claimed by ann" in err["error"]

        status, decided = await call(
            http,
            "POST",
            f"{b.base}/v1/reviews/{rid}/decide",
            {"reviewer_id": "ann", "decision": "uphold", "note": "seen"},
        )
        assert status == 200 and decided["status"] == "decided"
        status, on_a_item = await call(http, "GET", f"{a.base}/v1/reviews/{rid}")
        assert status == 200 and on_a_item["decision"] == "uphold"
        assert on_a_item["decided_by"] == "ann"
        assert [h["event"] for h in on_a_item["history"]] == ["queued", "claimed", "uphold"]
        # Decided once: a second decision on a is refused.
        status, _ = await call(
            http,
            "POST",
            f"{a.base}/v1/reviews/{rid}/decide",
            {"reviewer_id": "ann", "decision": "overturn"},
        )
        assert status == 409
        _, open_on_a = await call(http, "GET", f"{a.base}/v1/reviews")
        assert open_on_a["reviews"] == []


async def test_racing_claims_on_two_instances_give_one_holder(redis_server: RedisServer) -> None:
    clients = [aioredis.Redis.from_url(redis_server.url) for _ in range(2)]
    queues = [
        RedisReviewQueue(clients[0], "a", lambda: "http://a"),
        RedisReviewQueue(clients[1], "b", lambda: "http://b"),
    ]
    try:
        item = await queues[0].add(
            NewReview("s1", "u1", "r1", "violence", "high", "policy_review",
                      detail={"action_seq": 7, "evidence_ids": ["e1"]})
        )  # fmt: skip
        # The same action offered again (a restart) gives the same item.
        again = await queues[1].add(NewReview("s1", "u1", "r1", "violence", "high", "x",
                                              detail={"action_seq": 7}))  # fmt: skip
        assert again["id"] == item["id"] and await queues[1].open_count() == 1
        assert item["evidence"][0]["image"] == "http://a/v1/evidence/e1/image"
        # A first write cut short after its SET NX: the retry writes under that id.
        await clients[0].set("livemod:review:action:8", "cut0short")
        cut = await queues[0].add(NewReview("s1", "u1", "r1", "drugs", "low", "policy_review",
                                            detail={"action_seq": 8}))  # fmt: skip
        assert cut["id"] == "cut0short" and await queues[1].open_count() == 2

        async def claim(i: int) -> str:
            try:
                await queues[i % 2].claim(item["id"], f"rev{i}")
            except RequestError as exc:
                assert exc.status == 409
                return ""
            return f"rev{i}"

        winners = [w for w in await asyncio.gather(*(claim(i) for i in range(12))) if w]
        assert len(winners) == 1
        held = await queues[1].get(item["id"])
        assert held["claimed_by"] == winners[0] and held["status"] == "claimed"
    finally:
        for c in clients:
            await c.aclose()
