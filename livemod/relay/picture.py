"""Pictures the relay writes instead of what it must not show.

Pixelation averages blocks (a mosaic, not a Gaussian blur: a blur of a face or of
text can be partly undone by deconvolution, coarse block means cannot); the slate is
a still picture with a line of text, rendered once per output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from livemod.messages import Image
from livemod.relay.plan import Box

WHOLE_BLOCKS = 16
"""The whole picture becomes this many blocks across (a 640-wide frame: 40 px blocks)."""
REGION_BLOCKS = 6
"""A region becomes this many blocks across its longer side, blocks at least 8 px."""
MIN_BLOCK = 8


def pixelate(image: Image, boxes: Sequence[Box] | None = None) -> Image:
    """``image`` with each box (or the whole picture, ``boxes=None``) pixelated in place."""
    if boxes is None:
        h, w = image.shape[:2]
        _mosaic(image, Box(0, 0, w, h), max(MIN_BLOCK, w // WHOLE_BLOCKS))
        return image
    for box in boxes:
        side = max(box.x1 - box.x0, box.y1 - box.y0)
        _mosaic(image, box, max(MIN_BLOCK, side // REGION_BLOCKS))
    return image


def _mosaic(image: Image, box: Box, block: int) -> None:
    part = image[box.y0 : box.y1, box.x0 : box.x1]
    h, w = part.shape[:2]
    if h == 0 or w == 0:
        return
    small = cv2.resize(
        part, (max(1, -(-w // block)), max(1, -(-h // block))), interpolation=cv2.INTER_AREA
    )
    part[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def slate(width: int, height: int, text: str, image: Path | None = None) -> Image:
    """The slate at ``width`` x ``height``: the configured picture (letterboxed) or a
    dark background, with ``text`` centred near the bottom."""
    canvas = np.full((height, width, 3), 24, dtype=np.uint8)
    if image is not None:
        picture = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if picture is not None:
            ph, pw = picture.shape[:2]
            scale = min(width / pw, height / ph)
            nw, nh = max(1, int(pw * scale)), max(1, int(ph * scale))
            resized = cv2.resize(picture, (nw, nh), interpolation=cv2.INTER_AREA)[:, :, ::-1]
            x, y = (width - nw) // 2, (height - nh) // 2
            canvas[y : y + nh, x : x + nw] = resized
    if text:
        scale = max(0.4, height / 480)
        thickness = max(1, round(scale * 2))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        org = (max(0, (width - tw) // 2), height - max(th, height // 8))
        cv2.putText(
            canvas,
            text,
            org,
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (235, 235, 235),
            thickness,
            cv2.LINE_AA,
        )
    return np.ascontiguousarray(canvas)
