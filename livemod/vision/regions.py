"""Where in a frame a listed picture may be: the content area and candidate insets.

A live stream rarely shows a picture full-frame: it is scaled to fit (black bars),
padded inside a screen share, or shown as a picture-in-picture over other video.
Hashing only the whole frame misses all of those, so the matcher hashes a bounded
set of boxes found here on a small grey copy of the frame (~0.2 ms at 640x360):

* the whole frame;
* the content area, after trimming uniform borders (letterbox, pillarbox, padding),
  strictly (every pixel of a border line alike) and leniently (most of them: a
  caption or logo over the bars);
* rectangles whose four sides are edges (insets, a picture held up to the camera),
  ranked by how much of their outline is edge and by size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from livemod.messages import Image

__all__ = [
    "CAPTION_CUTS",
    "CROPS",
    "Box",
    "BoxKind",
    "View",
    "candidate_boxes",
    "caption_area",
    "content_box",
    "snap_inset",
]

BoxKind = Literal["frame", "content", "inset"]

_SMALL_W: Final = 160
"""The small grey copy is at least this wide (213 px for 640, whole-number factor)."""
_FLAT_RANGE: Final = 24
"""A row or column whose grey values span less than this is border, not picture."""
_LOW_PCT: Final = 3
_HIGH_PCT: Final = 80
_MIN_SIDE: Final = 0.15
"""Boxes narrower or shorter than this fraction of the frame are not hashed."""
_MIN_OUTLINE: Final = 0.6
"""Fraction of each side of a rectangle that must lie on edges for it to be a candidate."""
_EDGE: Final = 24
"""Grey step across two pixels of the small copy that counts as an edge."""
_FRAME_SIDE: Final = 0.85
_SNAP_STEP: Final = 12
_MIN_INSET: Final = 0.2
"""Corner insets narrower or shorter than this fraction of the frame are not looked for."""
_MARGIN: Final = 0.08
"""How far from the frame's edge a corner inset's outer sides are looked for."""
_MAX_LINES: Final = 12
"""Strongest vertical and horizontal lines combined into rectangles (66 x 66 pairs)."""
_PAD3: Final = np.zeros(3, np.float64)
_PAD2: Final = np.zeros(2, np.int64)


@dataclass(frozen=True, slots=True)
class Box:
    """A box in frame pixels and why it is a candidate."""

    x: int
    y: int
    w: int
    h: int
    kind: BoxKind

    def crop(self, image: Image) -> Image:
        return image[self.y : self.y + self.h, self.x : self.x + self.w]


@dataclass(frozen=True, slots=True)
class View:
    """A part of a picture hashed on its own: a centred crop (``side`` "centre", the
    fraction of each dimension cut away, half from each side) or a band cut off the
    top or bottom (a caption, a banner). The list hashes its pictures under every view
    at load; the matcher hashes the frame's content area under the cuts, so both sides
    of a match lose the same rows however the caption looks."""

    side: Literal["centre", "top", "bottom"]
    fraction: float

    @property
    def name(self) -> str:
        pct = round(self.fraction * 100)
        return f"crop {pct}%" if self.side == "centre" else f"{self.side} {pct}% cut"

    def rect(self, w: int, h: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the view inside a ``w`` x ``h`` picture."""
        if self.side == "centre":
            dx, dy = round(w * self.fraction / 2), round(h * self.fraction / 2)
            return dx, dy, max(1, w - 2 * dx), max(1, h - 2 * dy)
        cut = round(h * self.fraction)
        return 0, (cut if self.side == "top" else 0), w, max(1, h - cut)

    def crop(self, image: Image) -> Image:
        x, y, w, h = self.rect(image.shape[1], image.shape[0])
        return image[y : y + h, x : x + w]


CROPS: Final = tuple(View("centre", k / 100) for k in range(2, 21, 2))
"""Centred crops a listed picture is also hashed under: PDQ moves ~14 bits (median)
per 1 % of crop, past its threshold at 2-3 %, so the steps are 2 % apart."""
CAPTION_CUTS: Final = (View("bottom", 0.15), View("bottom", 0.25), View("top", 0.15))
"""Bands cut off both a listed picture and the frame's content area: subtitles and
caption bars (one or two lines) at the bottom, a banner at the top."""


def _grey_small(image: Image) -> tuple[npt.NDArray[np.uint8], float]:
    grey: object = image
    if image.ndim == 3:
        grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    h, w = image.shape[:2]
    f = max(1, w // _SMALL_W)
    if f > 1:
        # A whole-number ratio takes OpenCV's fast area path (~6x the generic one);
        # the < f edge pixels it drops are below the small copy's resolution anyway.
        g = cast("npt.NDArray[np.uint8]", grey)[: h - h % f, : w - w % f]
        grey = cv2.resize(np.ascontiguousarray(g), (w // f, h // f), interpolation=cv2.INTER_AREA)
    return cast("npt.NDArray[np.uint8]", grey), float(f)


def _trim(flat: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """First and one-past-last index that is not flat (0, 0 when all are)."""
    idx = np.flatnonzero(~flat)
    if idx.size == 0:
        return 0, 0
    return int(idx[0]), int(idx[-1]) + 1


def _flat(grey: npt.NDArray[np.uint8], axis: int, lenient: bool) -> npt.NDArray[np.bool_]:
    if not lenient:
        return cast("npt.NDArray[np.bool_]", np.ptp(grey, axis=axis) < _FLAT_RANGE)
    # Most of a border line is one shade: a caption or a logo laid over the bars
    # covers a few of its pixels, so the spread is taken between percentiles. This
    # also eats into a picture whose edge is plain sky: hence a second box, not the only.
    sub = grey[:, ::2] if axis == 1 else grey[::2]  # every other pixel is plenty
    lo, hi = np.percentile(sub, [_LOW_PCT, _HIGH_PCT], axis=axis)
    return cast("npt.NDArray[np.bool_]", (hi - lo) < _FLAT_RANGE)


def _content(
    grey: npt.NDArray[np.uint8], lenient: bool = False
) -> tuple[int, int, int, int] | None:
    y0, y1 = _trim(_flat(grey, 1, lenient))
    x0, x1 = _trim(_flat(grey, 0, lenient))
    if y1 <= y0 or x1 <= x0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def content_box(image: Image) -> Box | None:
    """The frame without uniform borders, or None when there is no border to trim
    or nothing but border."""
    grey, scale = _grey_small(image)
    found = _content(grey)
    if found is None:
        return None
    x, y, w, h = found
    gh, gw = grey.shape
    if (x, y, w, h) == (0, 0, gw, gh):
        return None
    return _to_frame(x, y, w, h, scale, image.shape, "content")


def _refine(full: npt.NDArray[np.uint8], box: Box, reach: int) -> Box:
    """Move each side of ``box`` onto the picture's edge at full resolution.

    The small copy places a side to within ``reach`` pixels; a strip of border left
    inside the box (a few light pixels beside a dark picture) costs PDQ tens of bits.
    A side moves in while its line is flat, or out while the line beyond it is not.
    """
    fh, fw = full.shape[:2]
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h

    def flat(line: npt.NDArray[np.uint8]) -> bool:
        return line.size == 0 or int(line.max()) - int(line.min()) < _FLAT_RANGE

    for _ in range(reach):
        if x1 - x0 > 8 and flat(full[y0:y1, x0]):
            x0 += 1
        elif x0 > 0 and not flat(full[y0:y1, x0 - 1]):
            x0 -= 1
        if x1 - x0 > 8 and flat(full[y0:y1, x1 - 1]):
            x1 -= 1
        elif x1 < fw and not flat(full[y0:y1, x1]):
            x1 += 1
        if y1 - y0 > 8 and flat(full[y0, x0:x1]):
            y0 += 1
        elif y0 > 0 and not flat(full[y0 - 1, x0:x1]):
            y0 -= 1
        if y1 - y0 > 8 and flat(full[y1 - 1, x0:x1]):
            y1 -= 1
        elif y1 < fh and not flat(full[y1, x0:x1]):
            y1 += 1
    return Box(x0, y0, x1 - x0, y1 - y0, box.kind)


def caption_area(shape: tuple[int, ...], content: Box) -> Box:
    """``content`` (the content area) less what a caption widened it by.

    Text over the picture's bottom that spills onto the bars makes those bars' lines
    look like picture, so the content area grows on that side. A fitted picture is
    centred: where both bars of an axis were found, the larger one is taken for
    both. (Shrinking a side while its line is flat instead would eat into pictures
    with a plain edge, a wall or the sky.)"""
    fh, fw = shape[:2]
    x0, y0, x1, y1 = content.x, content.y, content.x + content.w, content.y + content.h
    left, right, top, bottom = x0, fw - x1, y0, fh - y1
    if left > 0 and right > 0:
        left = right = max(left, right)
    if top > 0 and bottom > 0:
        top = bottom = max(top, bottom)
    if fw - left - right < 8 or fh - top - bottom < 8:
        return content
    return Box(left, top, fw - left - right, fh - top - bottom, content.kind)


def _best_step(steps: npt.NDArray[np.bool_], lo: int, keep: int) -> int:
    """The index (from ``lo``) of the strongest border among the candidate lines of
    ``steps`` (one per row of it: which pixels step there), or ``keep`` when none
    is at least half a border. A thin line (a mortar joint, a stripe) steps twice,
    two or three pixels apart, so a step with another that close is discounted."""
    frac = steps.mean(axis=1)
    # np.pad costs 20 µs a call, this 2; it runs for every side of every inset of a sample
    padded = np.concatenate((_PAD3, frac, _PAD3))
    near = np.maximum.reduce([padded[1:-5], padded[5:-1], padded[:-6], padded[6:]])
    score = frac - 0.5 * near
    k = int(np.argmax(score))
    return lo + k if frac[k] >= 0.5 else keep


def _snap(full: npt.NDArray[np.uint8], box: Box, reach: int, margin: int = 0) -> Box:
    """Move each side of an inset onto the strongest step within ``reach`` pixels,
    at full resolution: the small copy places a side only to within a few pixels,
    and a strip of background inside the box costs PDQ tens of bits. A side within
    ``margin`` of the frame's edge (an inset's outer side, which the small copy often
    puts on the frame's edge or a line of the background) is looked for across the
    whole margin."""
    fh, fw = full.shape[:2]
    g = full.astype(np.int16)
    x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h

    def col(lo: int, hi: int, keep: int) -> int:
        # A border steps along its whole length; an edge inside the picture, only in
        # places: count the pixels that step, not how far they step.
        lo, hi = max(1, lo), min(fw - 1, hi)
        if hi <= lo:
            return keep
        steps = np.abs(g[y0:y1, lo : hi + 1] - g[y0:y1, lo - 1 : hi]) > _SNAP_STEP
        return _best_step(steps.T, lo, keep)

    def row(lo: int, hi: int, keep: int) -> int:
        lo, hi = max(1, lo), min(fh - 1, hi)
        if hi <= lo:
            return keep
        steps = np.abs(g[lo : hi + 1, x0:x1] - g[lo - 1 : hi, x0:x1]) > _SNAP_STEP
        return _best_step(steps, lo, keep)

    # A side within the margin is looked for from the frame's edge to the margin.
    mx, my = margin * fw // max(fh, 1), margin
    x0 = col(x0 - reach, max(x0, mx) + reach, x0)
    x1 = col(max(x0 + 8, min(x1, fw - mx) - reach), x1 + reach, x1)
    y0 = row(y0 - reach, max(y0, my) + reach, y0)
    y1 = row(max(y0 + 8, min(y1, fh - my) - reach), y1 + reach, y1)
    return Box(x0, y0, x1 - x0, y1 - y0, box.kind)


def snap_inset(full: npt.NDArray[np.uint8], box: Box, reach: int = 8) -> Box:
    """``box`` (an inset placed roughly, e.g. by keypoints) with each side moved onto
    the strongest full-length step within ``reach`` pixels of ``full`` (the frame's
    grey, full resolution)."""
    return _snap(full, box, reach, margin=int(_MARGIN * full.shape[0]))


def _to_frame(
    x: int, y: int, w: int, h: int, scale: float, shape: tuple[int, ...], kind: BoxKind
) -> Box:
    fh, fw = shape[:2]
    x0, y0 = min(fw - 1, round(x * scale)), min(fh - 1, round(y * scale))
    x1, y1 = min(fw, round((x + w) * scale)), min(fh, round((y + h) * scale))
    return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0), kind)


def _lines(grey: npt.NDArray[np.uint8], axis: int, length: int) -> npt.NDArray[np.bool_]:
    """Pixels on straight edges at least ``length`` long, across ``axis`` (1: vertical
    lines, 0: horizontal), as a map the size of ``grey`` whose outer rows or columns
    count as lines too (an inset flush with the frame's edge)."""
    g = grey.astype(np.int16)
    if axis == 1:
        step = np.abs(g[:, 2:] - g[:, :-2]) > _EDGE
        kernel = np.ones((length, 1), np.uint8)
    else:
        step = np.abs(g[2:, :] - g[:-2, :]) > _EDGE
        kernel = np.ones((1, length), np.uint8)
    bridge = np.ones((3, 1) if axis == 1 else (1, 3), np.uint8)
    # Closing bridges one-pixel gaps where the picture's edge meets a background of
    # its own shade; opening then keeps only runs at least ``length`` long.
    closed = cv2.morphologyEx(step.astype(np.uint8), cv2.MORPH_CLOSE, bridge)
    opened = cv2.morphologyEx(closed, cv2.MORPH_OPEN, kernel) > 0
    # A one-pixel tolerance: resampling smears a sharp inset border over two pixels.
    wide = (1, 3) if axis == 1 else (3, 1)
    opened = cv2.dilate(opened.astype(np.uint8), np.ones(wide[::-1], np.uint8)) > 0
    full = np.zeros(grey.shape, dtype=np.bool_)
    if axis == 1:
        full[:, 1:-1] = opened
        full[:, [0, -1]] = True
    else:
        full[1:-1, :] = opened
        full[[0, -1], :] = True
    return full


def _longest_runs(lines: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """The longest run of True down each column: a border is one long straight line,
    texture is many short ones, which a plain count would add up."""
    h, w = lines.shape
    padded = np.zeros((h + 2, w), dtype=np.int8)
    padded[1:-1] = lines
    flat = padded.T.ravel()  # column after column, each framed by zeros
    step = np.diff(flat)
    starts = np.flatnonzero(step == 1)
    ends = np.flatnonzero(step == -1)
    best = np.zeros(w, dtype=np.int64)
    if starts.size:
        np.maximum.at(best, starts // (h + 2), ends - starts)
    return best


def _peaks(counts: npt.NDArray[np.int64], floor: int, limit: int) -> npt.NDArray[np.intp]:
    """Indices of the strongest lines: local maxima (within 2) of at least ``floor``."""
    padded = np.concatenate((_PAD2, counts, _PAD2))
    window = np.lib.stride_tricks.sliding_window_view(padded, 5).max(axis=1)
    idx = np.flatnonzero((counts == window) & (counts >= floor))
    top = idx[np.argsort(-counts[idx], kind="stable")[:limit]]
    return np.sort(top)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / float(aw * ah + bw * bh - inter)


def _steps(grey: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Vertical and horizontal edge maps (a grey step over two pixels), frame-sized."""
    g = grey.astype(np.int16)
    vert = np.zeros(grey.shape, dtype=np.bool_)
    horz = np.zeros(grey.shape, dtype=np.bool_)
    vert[:, 1:-1] = np.abs(g[:, 2:] - g[:, :-2]) > _EDGE
    horz[1:-1, :] = np.abs(g[2:, :] - g[:-2, :]) > _EDGE
    # One pixel of tolerance across the line: resampling smears a sharp border.
    vert[:, 1:-1] |= vert[:, :-2] | vert[:, 2:]
    horz[1:-1, :] |= horz[:-2, :] | horz[2:, :]
    return vert, horz


def _corner_insets(grey: npt.NDArray[np.uint8]) -> list[tuple[float, tuple[int, int, int, int]]]:
    """For each corner, the box anchored there whose inner sides are the best straight
    edges (picture-in-picture, a picture pasted into a corner), with its score."""
    gh, gw = grey.shape
    vert, horz = _steps(grey)
    # cv[y, x]: edge pixels in column x above row y; ch[y, x]: in row y left of column x.
    cv = np.vstack([np.zeros((1, gw), np.int64), np.cumsum(vert, axis=0)])
    ch = np.hstack([np.zeros((gh, 1), np.int64), np.cumsum(horz, axis=1)])
    mx, my = int(_MARGIN * gw), int(_MARGIN * gh)
    # Every other line: the full-resolution snap finds the exact side afterwards.
    xs = np.arange(int(_MIN_INSET * gw), gw - int(_MIN_INSET * gw), 2)
    ys = np.arange(int(_MIN_INSET * gh), gh - int(_MIN_INSET * gh), 2)
    out: list[tuple[float, tuple[int, int, int, int]]] = []
    for right in (False, True):
        for bottom in (False, True):
            # The span each inner side would cover, from the inner corner to the
            # frame's edge less a margin (the inset's outer sides are found below).
            r0, r1 = (ys, np.full_like(ys, gh - my)) if bottom else (np.full_like(ys, my), ys)
            c0, c1 = (xs, np.full_like(xs, gw - mx)) if right else (np.full_like(xs, mx), xs)
            # vertical inner side at column x over rows r0..r1, for every (y, x)
            vcov = (cv[r1[:, None], xs[None, :]] - cv[r0[:, None], xs[None, :]]) / np.maximum(
                (r1 - r0)[:, None], 1
            )
            hcov = (ch[ys[:, None], c1[None, :]] - ch[ys[:, None], c0[None, :]]) / np.maximum(
                (c1 - c0)[None, :], 1
            )
            cover = np.minimum(vcov, hcov)
            # Short sides are easily all edge by chance (texture): a bigger box wins ties.
            w_in = (gw - xs) if right else xs
            h_in = (gh - ys) if bottom else ys
            area = (h_in[:, None] * w_in[None, :]) / float(gw * gh)
            score = cover + 0.2 * area
            j, i = np.unravel_index(int(np.argmax(score)), score.shape)
            best = float(cover[j, i])
            if best < _MIN_OUTLINE:
                continue
            x_in, y_in = int(xs[i]), int(ys[j])
            x0, x1 = (x_in, gw) if right else (0, x_in + 1)
            y0, y1 = (y_in, gh) if bottom else (0, y_in + 1)
            # The outer sides: the strongest edge line in the margin band, else the frame.
            band = range(x1 - 1, x1 - 1 - mx, -1) if right else range(x0, x0 + mx)
            cols = [(cv[y1, c] - cv[y0, c]) / max(y1 - y0, 1) for c in band]
            if cols and max(cols) >= _MIN_OUTLINE:
                c = list(band)[int(np.argmax(cols))]
                x0, x1 = (x0, c + 1) if right else (c, x1)
            band = range(y1 - 1, y1 - 1 - my, -1) if bottom else range(y0, y0 + my)
            rows = [(ch[r, x1] - ch[r, x0]) / max(x1 - x0, 1) for r in band]
            if rows and max(rows) >= _MIN_OUTLINE:
                r = list(band)[int(np.argmax(rows))]
                y0, y1 = (y0, r + 1) if bottom else (r, y1)
            out.append((best, (x0, y0, x1 - x0, y1 - y0)))
    out.sort(key=lambda item: -item[0])
    return out


def _insets(grey: npt.NDArray[np.uint8], limit: int) -> list[tuple[int, int, int, int]]:
    """Rectangles whose four sides lie on straight edges, best first."""
    gh, gw = grey.shape
    min_h, min_w = max(3, int(_MIN_SIDE * gh)), max(3, int(_MIN_SIDE * gw))
    vert = _lines(grey, 1, min_h)
    horz = _lines(grey, 0, min_w)
    xs = _peaks(_longest_runs(vert), min_h, _MAX_LINES)
    ys = _peaks(_longest_runs(horz.T), min_w, _MAX_LINES)
    if xs.size < 2 or ys.size < 2:
        return []
    # Prefix sums turn "how much of this side is edge" into two lookups per side,
    # for every (x0, x1) x (y0, y1) pair at once.
    cv = np.vstack([np.zeros((1, gw), np.int64), np.cumsum(vert, axis=0)])
    ch = np.hstack([np.zeros((gh, 1), np.int64), np.cumsum(horz, axis=1)])
    i0, i1 = np.triu_indices(xs.size, k=1)
    j0, j1 = np.triu_indices(ys.size, k=1)
    x0, x1 = xs[i0][:, None], xs[i1][:, None]
    y0, y1 = ys[j0][None, :], ys[j1][None, :]
    w = np.broadcast_to(x1 - x0 + 1, (i0.size, j0.size))
    h = np.broadcast_to(y1 - y0 + 1, (i0.size, j0.size))
    left = (cv[y1 + 1, x0] - cv[y0, x0]) / h
    right = (cv[y1 + 1, x1] - cv[y0, x1]) / h
    top = (ch[y0, x1 + 1] - ch[y0, x0]) / w
    bottom = (ch[y1, x1 + 1] - ch[y1, x0]) / w
    # The frame's own edge is a side only when nothing better is there: it counts
    # as a side 85 % covered, so a real border a few pixels inside it wins.
    left = np.where(x0 == 0, _FRAME_SIDE, left)
    right = np.where(x1 == gw - 1, _FRAME_SIDE, right)
    top = np.where(y0 == 0, _FRAME_SIDE, top)
    bottom = np.where(y1 == gh - 1, _FRAME_SIDE, bottom)
    # The weakest side decides: a box whose left side crosses open video is no inset.
    cover = np.minimum(np.minimum(left, right), np.minimum(top, bottom))
    ok = (cover >= _MIN_OUTLINE) & (w >= min_w) & (h >= min_h) & (w * h < 0.9 * gw * gh)
    pi, pj = np.nonzero(ok)
    mean = (left + right + top + bottom)[pi, pj] / 4
    score = cover[pi, pj] + mean + 0.01 * np.sqrt((w * h)[pi, pj] / (gw * gh))
    best = np.argsort(-score, kind="stable")[: 8 * limit]
    kept: list[tuple[int, int, int, int]] = []
    for k in best:
        a, b = pi[k], pj[k]
        box = (int(x0[a, 0]), int(y0[0, b]), int(w[a, b]), int(h[a, b]))
        if all(_iou(box, other) < 0.7 for other in kept):
            kept.append(box)
            if len(kept) >= limit:
                break
    return kept


def candidate_boxes(image: Image, max_boxes: int = 6) -> list[Box]:
    """The boxes to hash, whole frame first, at most ``max_boxes`` (at least 1).

    ``image`` is the RGB frame or its grey copy (2-D), which is cheaper to reuse."""
    fh, fw = image.shape[:2]
    boxes = [Box(0, 0, fw, fh, "frame")]
    if max_boxes <= 1:
        return boxes
    grey, scale = _grey_small(image)
    gh, gw = grey.shape
    full: npt.NDArray[np.uint8] = (
        image
        if image.ndim == 2
        else cast(
            "npt.NDArray[np.uint8]", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        )
    )
    reach = int(np.ceil(scale)) + 2
    taken = [(b.x, b.y, b.w, b.h) for b in boxes]
    for lenient in (False, True):
        found = _content(grey, lenient)
        if found is None or found == (0, 0, gw, gh) or len(boxes) >= max_boxes:
            continue
        x, y, w, h = found
        if w >= _MIN_SIDE * gw and h >= _MIN_SIDE * gh:
            box = _to_frame(x, y, w, h, scale, image.shape, "content")
            if not lenient:
                box = _refine(full, box, reach)
            rect = (box.x, box.y, box.w, box.h)
            if all(_iou(rect, other) < 0.97 for other in taken):
                boxes.append(box)
                taken.append(rect)
    if len(boxes) >= max_boxes:
        return boxes
    corners = [box for _, box in _corner_insets(grey)]
    general = _insets(grey, max_boxes) if len(boxes) + len(corners) < max_boxes else []
    for x, y, w, h in corners + general:
        box = _to_frame(x, y, w, h, scale, image.shape, "inset")
        box = _snap(full, box, reach, margin=int(_MARGIN * fh))
        rect = (box.x, box.y, box.w, box.h)
        if all(_iou(rect, other) < 0.8 for other in taken):
            boxes.append(box)
            taken.append(rect)
        if len(boxes) >= max_boxes:
            break
    return boxes
