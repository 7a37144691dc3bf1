"""Candidate boxes: the content area inside uniform borders, bounded in number."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from livemod.testing.media import photo
from livemod.vision.regions import (
    CAPTION_CUTS,
    CROPS,
    View,
    candidate_boxes,
    caption_area,
    content_box,
)


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


def test_views_cut_the_same_part_of_any_picture() -> None:
    crop, bottom, top = View("centre", 0.1), View("bottom", 0.15), View("top", 0.15)
    assert crop.rect(400, 300) == (20, 15, 360, 270) and crop.name == "crop 10%"
    assert bottom.rect(400, 300) == (0, 0, 400, 255) and bottom.name == "bottom 15% cut"
    assert top.rect(400, 300) == (0, 45, 400, 255)
    assert [v.name for v in CROPS] == [f"crop {k}%" for k in range(2, 21, 2)]
    assert CAPTION_CUTS and all(v.side != "centre" for v in CAPTION_CUTS)


def test_a_caption_over_the_bars_is_cut_back_off_the_content_area() -> None:
    frame, (x, y, w, h) = pillarboxed("rocket")
    # Text from the left bar across the picture's bottom: the bar's columns now vary.
    cv2.putText(frame, "LIVE NOW  follow me", (20, 346), 0, 0.8, (255, 255, 255), 2)
    (content,) = [b for b in candidate_boxes(frame, 6) if b.kind == "content"][:1]
    assert content.x < x - 10  # widened by the caption
    area = caption_area(frame.shape, content)
    assert abs(area.x - x) <= 2 and abs(area.w - w) <= 4 and (area.y, area.h) == (y, h)
