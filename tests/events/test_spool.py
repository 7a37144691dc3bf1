"""The spool's bound and drop order: pictures first, then non-actions, actions last."""

from __future__ import annotations

from typing import Any

import numpy as np

from livemod.events.spool import Spool, SpoolLimits
from livemod.store import EvidenceInput


def picture(nbytes: int) -> EvidenceInput:
    image = np.zeros((1, nbytes // 3, 3), np.uint8)
    return EvidenceInput("s", "sexual", 0.0, {}, image)


def event(seq: int, kind: str = "action") -> dict[str, Any]:
    return {"seq": seq, "type": kind}


def test_order_is_kept_and_pop_returns_oldest() -> None:
    spool = Spool()
    for seq in range(1, 4):
        assert not spool.add(event(seq), None)
    assert [spool.pop().event["seq"] for _ in range(3)] == [1, 2, 3]
    assert spool.peek() is None


def test_pictures_go_first_oldest_first_and_the_event_says_so() -> None:
    spool = Spool(SpoolLimits(max_events=100, max_evidence_bytes=3000))
    spool.add(event(1), picture(1500))
    spool.add(event(2), picture(1500))
    assert spool.evidence_bytes == 3000
    assert spool.add(event(3), picture(1500))
    items = list(spool)
    assert items[0].evidence is not None and items[0].evidence.image is None
    assert items[0].event["evidence"] == "unavailable"
    assert items[1].evidence is not None and items[1].evidence.image is not None
    assert spool.evidence_bytes == 3000 and spool.dropped_evidence == 1
    assert len(spool) == 3  # no event lost for a picture


def test_past_the_event_bound_non_actions_go_before_actions() -> None:
    spool = Spool(SpoolLimits(max_events=3, max_evidence_bytes=0))
    spool.add(event(1), None)
    spool.add(event(2, "session"), None)
    spool.add(event(3), None)
    assert spool.add(event(4), None)
    assert [i.event["seq"] for i in spool] == [1, 3, 4]
    assert spool.add(event(5), None)  # only actions left: the oldest goes
    assert [i.event["seq"] for i in spool] == [3, 4, 5]
    assert spool.dropped_events == 2
