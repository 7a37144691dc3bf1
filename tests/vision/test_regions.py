"""Candidate boxes: the content area inside uniform borders, bounded in number."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from livemod.testing.media import photo
from livemod.vision.regions import candidate_boxes, content_box


def pillarboxed(name: str, colour: int = 0) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    pic = photo(name)
    w = round(pic.shape[1] * 360 / pic.shape[0])
    frame = np.full((360, 640, 3), colour, np.uint8)
    x = (640 - w) // 2
    frame[:, x : x + w] = cv2.resize(pic, (w, 360), interpolation=cv2.INTER_AREA)
    return frame, (x, 0, w, 360)


@pytest.mark.parametrize("colour", [0, 16, 255])
def test_content_box_trims_uniform_bars(colour: int) -> None:
    frame, (x, y, w, h) = pillarboxed("camera", colour)
    box = content_box(frame)
    assert box is not None and box.kind == "content"
    assert abs(box.x - x) <= 4 and abs(box.w - w) <= 8 and box.y == y and box.h == h


def test_a_full_frame_picture_has_no_content_box_and_a_flat_frame_neither() -> None:
    assert content_box(cv2.resize(photo("coffee"), (640, 360))) is None
    assert content_box(np.zeros((360, 640, 3), np.uint8)) is None


@pytest.mark.parametrize("limit", [1, 2, 4, 6])
def test_candidate_boxes_start_with_the_frame_and_stay_bounded(limit: int) -> None:
    frame, _ = pillarboxed("astronaut")
    frame[20:140, 400:600] = cv2.resize(photo("chelsea"), (200, 120))
    boxes = candidate_boxes(frame, limit)
    assert 1 <= len(boxes) <= limit
    assert (boxes[0].x, boxes[0].y, boxes[0].w, boxes[0].h) == (0, 0, 640, 360)
    for b in boxes:
        assert b.x >= 0 and b.y >= 0 and b.x + b.w <= 640 and b.y + b.h <= 360
