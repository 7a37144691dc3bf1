"""Clips whose every frame says which it is, and how to read a relayed output back.

Each picture carries its frame index as a 12-bit barcode along the bottom edge, so a
viewer can tell which source frame an output frame came from whatever the delay or
the offset; the audio is a 440 Hz tone during the first half of every second (its
onsets mark whole seconds, for A/V sync). An optional photograph sits in a box
(``INSET``) for a stretch of the clip: the region a regional blur must cover.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from livemod.messages import Region
from livemod.testing import media as testmedia

FPS = 25
W, H = 640, 360
BITS = 12
BAR_W, BAR_Y0, BAR_Y1, BAR_X0 = 24, 336, 356, 8
INSET = (360, 30, 600, 190)
"""x0, y0, x1, y1 of the photo box."""
INSET_REGION = Region(INSET[0], INSET[1], INSET[2] - INSET[0], INSET[3] - INSET[1], "photo", 0.9)
"""The inset as the vision stage would report it (x, y, width, height, label, score)."""
RATE = 48_000
TONE_HZ = 440.0


def picture(index: int, inset: np.ndarray[Any, Any] | None) -> np.ndarray[Any, Any]:
    img = testmedia.pattern(index / FPS, (W, H))
    if inset is not None and inset.shape[:2] == (H, W):
        return inset.copy()  # no barcode: the listed picture exactly, as the hash knows it
    if inset is not None:
        x0, y0, x1, y1 = INSET
        img[y0:y1, x0:x1] = inset
    img[BAR_Y0 - 4 : H, :] = 0
    marker = BAR_X0 + BITS * BAR_W  # always white: a barcode, not some dark strip
    img[BAR_Y0:BAR_Y1, marker + 3 : marker + BAR_W - 3] = 255
    for bit in range(BITS):
        if index >> bit & 1:
            x = BAR_X0 + bit * BAR_W
            img[BAR_Y0:BAR_Y1, x + 3 : x + BAR_W - 3] = 255
    return img


def read_index(img: np.ndarray[Any, Any]) -> int | None:
    """The frame index in a decoded picture; None when the barcode is not there."""
    strip = img[BAR_Y0 + 4 : BAR_Y1 - 4].mean(axis=2)
    if img[BAR_Y0 - 3 : BAR_Y0 - 1].mean() > 40:
        return None
    marker = BAR_X0 + BITS * BAR_W
    if strip[:, marker + 7 : marker + BAR_W - 7].mean() < 190:
        return None
    value = 0
    for bit in range(BITS):
        x = BAR_X0 + bit * BAR_W
        level = strip[:, x + 7 : x + BAR_W - 7].mean()
        if 60 < level < 190:
            return None
        if level >= 190:
            value |= 1 << bit
    return value


def tone(t: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    on = (t % 1.0) < 0.5
    return (0.4 * np.sin(2 * np.pi * TONE_HZ * t) * on).astype(np.float32)


def make_inset() -> np.ndarray[Any, Any]:
    """The photo as it sits in the box."""
    size = (INSET[2] - INSET[0], INSET[3] - INSET[1])
    return testmedia.fit(testmedia.photo(testmedia.KNOWN_BAD_PHOTO), size)


def make(
    path: Path,
    duration_s: float,
    inset_s: tuple[float, float] | None,
    *,
    full: bool = False,
    windows: list[tuple[float, float, str]] | None = None,
) -> None:
    """Write the clip (mp4 or flv from the suffix) with its photo inset (or filling the
    picture, ``full``) during ``inset_s``; or during each of ``windows`` (start, end,
    ``inset`` or ``full``)."""
    inset, whole = make_inset(), testmedia.fit(testmedia.photo(testmedia.KNOWN_BAD_PHOTO), (W, H))
    shown = list(windows or [])
    if inset_s is not None:
        shown.append((inset_s[0], inset_s[1], "full" if full else "inset"))

    def content(t: float) -> np.ndarray[Any, Any] | None:
        for a, b, mode in shown:
            if a <= t < b:
                return whole if mode == "full" else inset
        return None

    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=FPS)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        v.options = {"preset": "veryfast", "crf": "18", "g": str(2 * FPS)}
        a = out.add_stream("aac", rate=RATE)
        a.layout = "mono"
        n = round(duration_s * FPS)
        per = RATE // FPS
        for i in range(n):
            t = i / FPS
            frame = av.VideoFrame.from_ndarray(picture(i, content(t)), format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            for p in v.encode(frame):
                out.mux(p)
            ts = (np.arange(per) + i * per) / RATE
            af = av.AudioFrame.from_ndarray(tone(ts)[None, :], format="flt", layout="mono")
            af.sample_rate = RATE
            af.pts = i * per
            af.time_base = Fraction(1, RATE)
            for p in a.encode(af):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        for p in a.encode():
            out.mux(p)


@dataclass
class Viewed:
    """What a viewer got: pictures with output times, and the audio."""

    frames: list[tuple[float, np.ndarray[Any, Any]]]
    audio: np.ndarray[Any, Any]
    audio_start_s: float
    rate: int

    def source_times(self) -> list[float]:
        """Each output frame's source time: from its barcode, else from the offset the
        readable frames agree on (a slate has no barcode)."""
        offsets = []
        for t, img in self.frames:
            idx = read_index(img)
            if idx is not None:
                offsets.append(idx / FPS - t)
        offset = float(np.median(offsets))
        return [t + offset for t, _ in self.frames]

    def offset_s(self) -> float:
        offsets = [idx / FPS - t for t, img in self.frames if (idx := read_index(img)) is not None]
        return float(np.median(offsets))

    def rms(self, t0: float, t1: float) -> float:
        """RMS of the audio between output times t0 and t1."""
        i = max(0, round((t0 - self.audio_start_s) * self.rate))
        j = max(i, round((t1 - self.audio_start_s) * self.rate))
        part = self.audio[i:j]
        return float(np.sqrt(np.mean(part**2))) if len(part) else 0.0

    def onsets(self) -> list[float]:
        """Output times where the tone starts (20 ms resolution)."""
        hop = self.rate // 50
        n = len(self.audio) // hop
        levels = np.sqrt((self.audio[: n * hop].reshape(n, hop) ** 2).mean(axis=1))
        out = []
        for k in range(1, n):
            if levels[k] > 0.1 and levels[k - 1] < 0.02:
                # refine inside the hop: first sample above a threshold
                seg = np.abs(self.audio[(k - 1) * hop : (k + 1) * hop])
                first = int(np.argmax(seg > 0.2))
                out.append(self.audio_start_s + ((k - 1) * hop + first) / self.rate)
        return out


def view(url: str, *, timeout_s: float = 30.0, options: dict[str, str] | None = None) -> Viewed:
    """Read an output to its end as a viewer would (PyAV)."""
    frames: list[tuple[float, np.ndarray[Any, Any]]] = []
    chunks: list[np.ndarray[Any, Any]] = []
    audio_start: float | None = None
    with av.open(url, options=options or {}, timeout=(timeout_s, timeout_s)) as c:
        streams = [c.streams.video[0]] + ([c.streams.audio[0]] if c.streams.audio else [])
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        try:
            for packet in c.demux(*streams):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    t = float(frame.pts * frame.time_base)
                    if packet.stream.type == "video":
                        frames.append((t, frame.to_ndarray(format="rgb24")))
                    else:
                        for r in resampler.resample(frame):
                            if audio_start is None:
                                audio_start = t
                            chunks.append(r.to_ndarray().reshape(-1))
        except (av.error.EOFError, av.error.ExitError):
            pass
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return Viewed(frames, audio, audio_start or 0.0, RATE)


def psnr(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)
