"""Shared vote state in a real Redis: atomic updates, history that follows the key."""

from __future__ import annotations

import random
import threading

import numpy as np
import redis

from livemod.cluster.votes import RedisVoteStore
from livemod.messages import Decision, FrameAnalysis, Signal, VideoFrame
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from tests.redis_server import RedisServer

IMG = np.zeros((4, 4, 3), np.uint8)
KEY = "u1:r1"
POLICY = load_policy(DEFAULT_POLICY)


def engine(server: RedisServer) -> VoteEngine:
    client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return VoteEngine(POLICY, store=RedisVoteStore(client, retry_s=0.0))


def sample(i: int, score: float | None, stream: str = "s1") -> FrameAnalysis:
    t = i / 4
    signals = (Signal("violence", score, "vision:x"),) if score is not None else ()
    frame = VideoFrame(stream, i, t, 100.0 + t, IMG)
    return FrameAnalysis(frame, signals, {}, 1.0, 100.0 + t)


def brief(decisions: list[Decision]) -> list[tuple[str, str, str, str]]:
    return [(d.key, d.category, d.action, d.state) for d in decisions]


def test_redis_state_decides_exactly_as_the_in_memory_default(redis_server: RedisServer) -> None:
    rng = random.Random(7)
    memory, shared = VoteEngine(POLICY), engine(redis_server)
    scores = [rng.choice([None, 0.2, 0.6, 0.8, 0.97]) for _ in range(300)]
    acted = 0
    for i, score in enumerate(scores):
        key = f"u{i % 3}:r1"
        want = memory.update(key, sample(i, score))
        got = shared.update(key, sample(i, score))
        assert brief(got) == brief(want)
        acted += len(got)
        assert [d.evidence_frame is not None for d in got] == [
            d.evidence_frame is not None for d in want
        ]
        assert shared.levels(key) == memory.levels(key)
        assert shared.standing(key) == memory.standing(key)
    assert acted >= 4  # the run did start and stop actions
    stop_m = memory.release("u0:r1", "violence", t_now=1.0)
    stop_s = shared.release("u0:r1", "violence", t_now=1.0)
    assert (stop_m is None) == (stop_s is None)


def test_a_reconnect_on_another_instance_keeps_history_and_standing_action(
    redis_server: RedisServer,
) -> None:
    a, b = engine(redis_server), engine(redis_server)
    started = [d for i in range(8) for d in a.update(KEY, sample(i, 0.97))]
    assert [d for d in started if d.state == "start"]
    standing = a.standing(KEY)
    assert standing
    # The publisher rejoins through instance b: the action still stands there, and a
    # continued violation does not start it a second time.
    assert b.standing(KEY) == standing
    again = [d for i in range(8, 16) for d in b.update(KEY, sample(i, 0.97, "s2"))]
    assert not [d for d in again if d.state == "start"]
    # History too: b's first clean samples count toward the same clear_after run.
    assert b.levels(KEY) == a.levels(KEY)


def test_two_instances_racing_on_one_key_act_once(redis_server: RedisServer) -> None:
    engines = [engine(redis_server) for _ in range(4)]
    decisions: list[Decision] = []
    lock = threading.Lock()

    def feed(e: VoteEngine, offset: int) -> None:
        for i in range(offset, 40, 4):
            out = e.update(KEY, sample(i, 0.97))
            with lock:
                decisions.extend(out)

    threads = [threading.Thread(target=feed, args=(e, n)) for n, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts = [d for d in decisions if d.state == "start"]
    # However the samples interleave, each action starts once across the cluster.
    assert len({(d.category, d.action) for d in starts}) == len(starts) >= 1


def test_votes_go_on_locally_while_redis_is_lost_and_are_written_back(
    redis_server: RedisServer,
) -> None:
    a = engine(redis_server)
    store = a.store
    assert isinstance(store, RedisVoteStore)
    for i in range(3):
        a.update(KEY, sample(i, None))
    redis_server.stop()
    acted = [d for i in range(3, 12) for d in a.update(KEY, sample(i, 0.97))]
    assert [d for d in acted if d.state == "start"], "moderation stopped with Redis"
    assert store.degraded is not None
    redis_server.start()
    a.update(KEY, sample(12, 0.97))
    assert store.degraded is None
    # Another instance now reads the state decided during the outage.
    assert engine(redis_server).standing(KEY) == a.standing(KEY)
