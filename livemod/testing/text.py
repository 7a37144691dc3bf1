"""Synthesized clips with on-screen text, for the OCR tests and benchmark.

The background is encoded with PyAV (a still photograph from scikit-image, or a
talking-head-like scene: a face that sways and a mouth that moves); the text is
burnt in afterwards by the ``ffmpeg`` CLI's ``drawtext`` filter, as an overlay or a
scrolling ticker, and QR codes (made by OpenCV's encoder) by ``overlay``. Nothing is
downloaded or checked in.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from livemod.messages import Image
from livemod.testing import media as testmedia

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
"""From Debian's fonts-dejavu-core (scripts/setup.sh installs it)."""

Background = Literal["photo", "talking_head", "pattern"]


@dataclass(frozen=True, slots=True)
class Caption:
    """Text on screen from ``start_s`` to ``end_s``; ``x`` and ``y`` are ffmpeg
    expressions (``w``, ``h``, ``tw``, ``th``, ``t`` are defined), so a ticker is
    ``x="w-mod(t*200,w+tw)"``."""

    text: str
    start_s: float
    end_s: float
    x: str = "(w-tw)/2"
    y: str = "h-th-40"
    size: int = 36


@dataclass(frozen=True, slots=True)
class QrOverlay:
    payload: str
    start_s: float
    end_s: float
    x: int = 40
    y: int = 40
    module_px: int = 8


def talking_head(t: float, size: tuple[int, int]) -> Image:
    """A face (the astronaut's) that sways and breathes over a still room (the coffee
    photograph), with a mouth that opens and closes at speaking rate."""
    w, h = size
    room = _fitted("coffee", size)
    face = _fitted("astronaut", (w // 3, h // 2))
    fh, fw = face.shape[:2]
    dx = round(6 * math.sin(2 * math.pi * 0.4 * t))
    dy = round(3 * math.sin(2 * math.pi * 0.25 * t + 1.0))
    x0, y0 = (w - fw) // 2 + dx, h // 5 + dy
    frame = room.copy()
    frame[y0 : y0 + fh, x0 : x0 + fw] = face
    opening = int(fh * 0.04 * (1 + math.sin(2 * math.pi * 4.0 * t)))
    mx, my = x0 + fw // 2, y0 + int(fh * 0.62)
    cv2.ellipse(frame, (mx, my), (fw // 12, 2 + opening), 0, 0, 360, (60, 20, 30), -1)
    return frame


def _fitted(name: str, size: tuple[int, int]) -> Image:
    return testmedia.fit(testmedia.photo(name), size)


def captioned(lines: Sequence[str], *, background: str = "chelsea", size: int = 26) -> Image:
    """A 640x360 frame: a photograph with white-on-black caption boxes at the bottom,
    drawn with PIL (no video round trip)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw, ImageFont

    frame = PILImage.fromarray(_fitted(background, (640, 360)))
    draw = ImageDraw.Draw(frame)
    font = ImageFont.truetype(str(FONT), size)
    y = 360 - 20 - (size + 16) * len(lines)
    for line in lines:
        left, top, right, bottom = draw.textbbox((0, 0), line, font=font)
        x = (640 - (right - left)) // 2
        draw.rectangle((x - 8, y - 6, x + right - left + 8, y + bottom - top + 10), fill=(0, 0, 0))
        draw.text((x - left, y - top), line, font=font, fill=(255, 255, 255))
        y += size + 16
    return np.array(frame, dtype=np.uint8)


def page_frame() -> Image:
    """scikit-image's page.png (a photographed book page) shown in a 640x360 frame."""
    from skimage import data

    page = cv2.cvtColor(np.asarray(data.page()), cv2.COLOR_GRAY2RGB)  # type: ignore[no-untyped-call]
    page = cv2.resize(page, (640, 318), interpolation=cv2.INTER_CUBIC)
    frame = np.full((360, 640, 3), 255, dtype=np.uint8)
    frame[:318] = page
    return frame


def make_background(
    path: Path,
    duration_s: float,
    kind: Background = "photo",
    *,
    photo: str = "chelsea",
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
) -> None:
    """Encode the background video (H.264, yuv420p) with PyAV."""
    still = _fitted(photo, size) if kind == "photo" else None
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(2 * fps)}
        for i in range(round(duration_s * fps)):
            t = i / fps
            if still is not None:
                img = still
            elif kind == "talking_head":
                img = talking_head(t, size)
            else:
                img = testmedia.pattern(t, size)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def qr_image(payload: str, module_px: int = 8) -> Image:
    """A QR code with its quiet zone, black on white, RGB."""
    code = cv2.QRCodeEncoder.create().encode(payload)
    big = cv2.resize(code, None, fx=module_px, fy=module_px, interpolation=cv2.INTER_NEAREST)
    return np.ascontiguousarray(np.stack([big] * 3, axis=-1), dtype=np.uint8)


def make_text_clip(
    path: Path,
    duration_s: float,
    captions: Sequence[Caption],
    *,
    background: Background = "photo",
    photo: str = "chelsea",
    qr: Sequence[QrOverlay] = (),
    size: tuple[int, int] = (1280, 720),
    fps: int = 25,
) -> Path:
    """Write ``path`` (MP4): the background with the captions and QR codes burnt in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="livemod-text-") as tmp:
        work = Path(tmp)
        if background == "photo":
            # A still needs no encoding pass: ffmpeg loops the picture itself.
            base = work / "background.png"
            cv2.imwrite(str(base), np.ascontiguousarray(_fitted(photo, size)[:, :, ::-1]))
            inputs = ["-loop", "1", "-framerate", str(fps), "-i", str(base)]
        else:
            base = work / "background.mp4"
            make_background(base, duration_s, background, size=size, fps=fps)
            inputs = ["-i", str(base)]
        chain = "[0:v]"
        filters: list[str] = []
        for i, code in enumerate(qr):
            png = work / f"qr{i}.png"
            cv2.imwrite(str(png), qr_image(code.payload, code.module_px))
            inputs += ["-loop", "1", "-i", str(png)]
            label = f"[q{i}]"
            filters.append(
                f"{chain}[{i + 1}:v]overlay={code.x}:{code.y}:shortest=1:"
                f"enable='between(t,{code.start_s},{code.end_s})'{label}"
            )
            chain = label
        draws = []
        for i, cap in enumerate(captions):
            # A text file spares escaping the caption for the filter syntax.
            text = work / f"caption{i}.txt"
            text.write_text(cap.text, encoding="utf-8")
            draws.append(
                f"drawtext=fontfile={FONT}:textfile={text}:fontsize={cap.size}:"
                f"fontcolor=white:box=1:boxcolor=black@0.65:boxborderw=10:"
                f"x={_esc(cap.x)}:y={_esc(cap.y)}:enable='between(t,{cap.start_s},{cap.end_s})'"
            )
        filters.append(f"{chain}{','.join(draws) or 'null'}[out]")
        cmd = [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *inputs,
            "-filter_complex", ";".join(filters), "-map", "[out]",
            "-t", f"{duration_s}", "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast",
            "-tune", "zerolatency", "-g", str(2 * fps), "-pix_fmt", "yuv420p", str(path),
        ]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return path


def _esc(expr: str) -> str:
    # A comma inside a filter's option ends the filter: escape it.
    return expr.replace(",", "\\,")
