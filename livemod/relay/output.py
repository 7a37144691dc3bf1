"""The relay's encoder and output: H.264 + AAC with PyAV, to RTMP (FLV) or HLS.

Timestamps are the session's media time less the first relayed frame's, in
milliseconds for video and in samples for audio, so they run on continuously
across actions (a slate is just other pixels at the same times) and across a
reconnect of the output. Keyframes come at a fixed interval (``gop_s``), scene-cut
keyframes are off, and the decoder's picture types are cleared so the source's
keyframes do not leak into the output's.

An output that cannot be opened or breaks (nginx restarted) is closed and opened
again with backoff; what the relay releases meanwhile is dropped and counted, so the
delay line stays bounded and moderation never waits for the output.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
import numpy.typing as npt

from livemod import metrics

log = logging.getLogger(__name__)

AUDIO_OUT_RATE = 48_000
VIDEO_TB = Fraction(1, 1000)
AUDIO_TB = Fraction(1, AUDIO_OUT_RATE)
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
OPEN_TIMEOUT_S = 5.0

Planar = npt.NDArray[np.float32]
"""Stereo float PCM, shape (2, n), at ``AUDIO_OUT_RATE``."""


@dataclass(frozen=True, slots=True)
class EncoderSettings:
    fps: float = 25.0
    gop_s: float = 2.0
    preset: str = "veryfast"
    crf: int = 23
    threads: int = 1
    audio_bitrate: int = 128_000
    hls_list_size: int = 10
    """Segments an HLS playlist lists (older ones are deleted); 0: all, none deleted."""


def is_hls(target: str) -> bool:
    """An HLS directory (a local path) rather than an RTMP URL."""
    return not target.lower().startswith(("rtmp://", "rtmps://"))


class Output:
    """One encoder and muxer; ``write_*`` raise on a broken output. Single thread."""

    def __init__(
        self, target: str, width: int, height: int, audio: bool, settings: EncoderSettings
    ) -> None:
        self.target = target
        self._width = width
        self._height = height
        if is_hls(target):
            folder = Path(target[7:] if target.startswith("file://") else target)
            folder.mkdir(parents=True, exist_ok=True)
            seg = max(1, round(settings.gop_s))
            self._container: Any = av.open(
                str(folder / "index.m3u8"),
                "w",
                format="hls",
                options={
                    "hls_time": str(seg),
                    "hls_list_size": str(settings.hls_list_size),
                    "hls_flags": "independent_segments"
                    + ("+delete_segments" if settings.hls_list_size else ""),
                    "hls_segment_filename": str(folder / "seg%05d.ts"),
                },
            )
        else:
            self._container = av.open(
                target, "w", format="flv", timeout=(OPEN_TIMEOUT_S, OPEN_TIMEOUT_S)
            )
        gop = max(1, round(settings.gop_s * settings.fps))
        video = self._container.add_stream(
            "libx264", rate=Fraction(settings.fps).limit_denominator(1001)
        )
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        video.codec_context.time_base = VIDEO_TB
        video.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "crf": str(settings.crf),
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "bf": "0",
            "threads": str(settings.threads),
        }
        self._video = video
        self._audio: Any = None
        if audio:
            a = self._container.add_stream("aac", rate=AUDIO_OUT_RATE)
            a.layout = "stereo"
            a.bit_rate = settings.audio_bitrate
            self._audio = a
        self._last_pts = -1

    def write_video(self, frame: Any, t_s: float) -> None:
        """Encode one picture (``av.VideoFrame`` or RGB array) at output time ``t_s``."""
        if isinstance(frame, np.ndarray):
            frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
        if frame.width != self._width or frame.height != self._height:
            frame = frame.reformat(width=self._width, height=self._height, format="yuv420p")
        pts = max(round(t_s * 1000), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TB
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self._video.encode(frame):
            self._container.mux(packet)

    def write_audio(self, samples: Planar, at_sample: int) -> None:
        if self._audio is None or samples.shape[1] == 0:
            return
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="fltp", layout="stereo"
        )
        frame.sample_rate = AUDIO_OUT_RATE
        frame.pts = at_sample
        frame.time_base = AUDIO_TB
        for packet in self._audio.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self._video.encode():
                self._container.mux(packet)
            if self._audio is not None:
                for packet in self._audio.encode():
                    self._container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError):
            pass  # a broken output has nothing left to flush into
        finally:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                self._container.close()


class ResilientOutput:
    """An :class:`Output` that reopens itself with backoff. Single thread."""

    def __init__(
        self,
        target: str,
        settings: EncoderSettings,
        *,
        on_change: Callable[[str, str | None], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self._settings = settings
        self._on_change = on_change
        self._clock = clock
        self._out: Output | None = None
        self._next_try = 0.0
        self._failures = 0
        self.failures_total = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.encode_s = 0.0
        self.ever_opened = False
        self.error: str | None = None

    @property
    def up(self) -> bool:
        return self._out is not None

    def _ensure(self, width: int, height: int, audio: bool) -> Output | None:
        if self._out is not None:
            return self._out
        now = self._clock()
        if now < self._next_try:
            return None
        try:
            self._out = Output(self.target, width, height, audio, self._settings)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)
            return None
        self._failures = 0
        self.error = None
        self._on_change("resumed" if self.ever_opened else "started", None)
        self.ever_opened = True
        return self._out

    def _failed(self, exc: BaseException) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        wait = BACKOFF_S[min(self._failures, len(BACKOFF_S) - 1)]
        self._failures += 1
        self.failures_total += 1
        self._next_try = self._clock() + wait
        first = self.error is None
        self.error = str(exc) or type(exc).__name__
        log.warning(
            "relay output failed; retrying",
            extra={"target": self.target, "error": self.error, "retry_in_s": wait},
        )
        if first:
            self._on_change("output_failed", self.error)

    def write(
        self, picture: Any, t_s: float, audio: list[tuple[Planar, int]], has_audio: bool
    ) -> bool:
        """Encode one frame and the audio that goes with it; False: dropped (output down)."""
        if isinstance(picture, np.ndarray):
            height, width = picture.shape[:2]
        else:
            width, height = int(picture.width), int(picture.height)
        out = self._ensure(width - width % 2, height - height % 2, has_audio)
        if out is None:
            self.frames_dropped += 1
            return False
        started = time.perf_counter()
        try:
            out.write_video(picture, t_s)
            for samples, at in audio:
                out.write_audio(samples, at)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._failed(exc)
            self.frames_dropped += 1
            return False
        took = time.perf_counter() - started
        self.encode_s += took
        metrics.RELAY_ENCODE_SECONDS.observe(took)
        self.frames_out += 1
        return True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
