"""Pull any URL or file that FFmpeg opens, decode it in a thread, sample it.

The decode loop runs on its own thread; only frames the fps gate admits are handed
on, as RGB scaled to at most ``max_side`` pixels (a 4:2:0 picture no larger than that
as its planes, converted to RGB when first read).
``t_arrival`` is taken when the packet is read, so decode time counts in latency.

``stop`` takes effect at once even while FFmpeg is blocked opening or reading (a
server that accepts and never answers): PyAV offers no way to interrupt a blocked
call but its own timeouts, so the blocked call is left to finish on its worker
thread, which then closes the container, and ``run`` returns ``stopped`` now.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import av
import av.error
import numpy as np
from av.video.reformatter import VideoReformatter

from livemod import metrics
from livemod.budget import lower_priority
from livemod.errors import IngestError, InputLost
from livemod.ingest.audio import AudioDecoder, AudioSink, stream_origin
from livemod.ingest.tap import FrameTap
from livemod.ingest.timeline import Jump, Timeline
from livemod.messages import AudioUnavailable, Image, Plane, Planes, VideoFrame
from livemod.sampling import FrameSampler

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_DECODE_ERRORS = 50
STOP_GRACE_S = 0.5
"""How long ``run`` waits after ``stop`` for the decode loop to notice it by itself
(between two packets) before leaving a blocked open or read behind."""
INPUT_LOST = "input_lost"
"""``SourceEnd.cause`` of a network feed that broke or went silent mid-stream."""


@dataclass(frozen=True, slots=True)
class SourceOptions:
    url: str
    realtime: bool = False
    """Pace a file at its own frame rate, so it behaves as a live feed."""
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    max_side: int = 640
    """Admitted frames are scaled so their longer side is at most this."""
    media_offset_s: float = 0.0
    """Where the session timeline starts, so a reconnected live pull continues the clock."""
    max_ts_jump_s: float = 5.0
    """A forward step in source timestamps beyond this is a discontinuity, not a gap."""
    hwaccel: str | None = None
    """FFmpeg hardware device type to decode on (``cuda``, ``vaapi``...), or None."""
    max_pixels: int = 3840 * 2160
    """Pictures larger than this (width x height) are decoded without frame threads,
    which would hold one set of full-size pictures per core."""
    threaded_pixels: int = 1920 * 1080
    """Pictures up to this size are decoded on one thread: many streams share the cores,
    and FFmpeg's per-stream threads only add their hand-offs. Larger ones get them, so a
    single big stream keeps up."""
    fast_decode: bool = True
    """Skip the pictures no other picture refers to (:func:`skip_for_analysis`). Never
    with a tap (the relay shows viewers every frame) or hardware decoding."""
    nice: int = 0
    """Lower the decoding thread's priority by this (``budget.lower_priority``)."""


@dataclass(frozen=True, slots=True)
class SourceEnd:
    """How a source finished. ``reason`` is ``eof``, ``stopped`` or ``error``."""

    reason: Literal["eof", "stopped", "error"]
    error: str | None
    frames_decoded: int
    frames_sampled: int
    duration_s: float
    retryable: bool = False
    """A live source that ended this way may work again if reopened."""
    cause: str | None = None
    """Why an ``error``, in one word, where known: :data:`INPUT_LOST`."""


def source_kind(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    return scheme if scheme and len(scheme) > 1 else "file"


def _open_options(url: str) -> dict[str, str]:
    scheme = source_kind(url)
    if scheme in ("rtmp", "rtmps"):
        # Short probing gets the first frame in about 0.2 s instead of 3 s; nginx-rtmp
        # keeps no GOP cache, and `nobuffer` would throw away what probing read.
        return {"flags": "low_delay", "analyzeduration": "300000", "probesize": "65536"}
    if scheme in ("rtsp", "rtsps"):
        return {"rtsp_transport": "tcp"}
    return {}


_M_MMAP_THRESHOLD = -3
HEAP_MMAP_THRESHOLD = 4 << 20
"""Blocks this large or larger get their own mapping, unmapped when freed."""


def skip_for_analysis(ctx: Any) -> None:
    """Decode ``ctx`` for analysis only: skip the pictures no other picture refers to
    (B-frames outside a pyramid). The sampler takes 2-8 of 25-60 frames a second, so
    it admits the next decoded one; 39 % less decoding CPU on 360p x264 with two
    B-frames, nothing skipped (and nothing saved) in a stream without B-frames. The
    deblocking filter stays: skipping it too saved 21 % without B-frames and moved
    open_nsfw by up to 0.09 and PDQ hashes by up to 34 bits (``docs/benchmarks.md``)."""
    ctx.skip_frame = "NONREF"


def keep_heap_small() -> bool:
    """Make glibc give blocks of :data:`HEAP_MMAP_THRESHOLD` and more their own
    mappings, returned to the system when freed. Process-wide; call once at start-up.

    glibc raises its threshold (up to 32 MiB) each time such a block is freed, so the
    picture buffers of a big input (8 MB planes at 7680x4320) then come from the heap
    and stay resident after the session: about 270 MB after one 8K input until
    restart. Smaller blocks, nearly all of them, are not affected. Returns whether
    the setting took (False without glibc).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD))


def _describe(url: str, exc: BaseException) -> str:
    if isinstance(exc, av.error.FileNotFoundError):
        return f"cannot open {url}: no such file"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return f"cannot open {url}: connection refused"
    if isinstance(exc, av.error.TimeoutError | TimeoutError):
        return f"cannot open {url}: timed out"
    if isinstance(exc, av.error.InvalidDataError):
        return f"cannot read {url}: not a media file or corrupt data"
    if isinstance(exc, av.error.HTTPError):
        return f"cannot open {url}: HTTP error ({exc})"
    if isinstance(exc, av.error.ProtocolNotFoundError):
        return f"cannot open {url}: unsupported protocol"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return f"cannot open {url}: {reason}"


_hw_warned: set[str] = set()


def _open_hw(path: str, url: str, device: str, timeout: tuple[float, float]) -> Any:
    """Open for decoding on ``device``; None (and one log line per device) when the
    device cannot be used, so the caller opens in software."""
    from av.codec.hwaccel import HWAccel

    try:
        hw = HWAccel(device_type=device, allow_software_fallback=True)
        return av.open(path, options=_open_options(url), timeout=timeout, hwaccel=hw)
    except (av.error.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        # RuntimeError: FFmpeg has the device type but no decoder for this codec on it.
        if device not in _hw_warned:
            _hw_warned.add(device)
            log.warning(
                "hardware decoding unavailable; decoding in software",
                extra={"hwaccel": device, "reason": str(exc)},
            )
        return None


class AvSource:
    """Decodes one source until it ends, fails or is stopped.

    ``deliver`` is called from the decode thread with every admitted frame; it must
    be thread-safe (the session hands the frame to the event loop).
    """

    def __init__(
        self,
        stream_id: str,
        options: SourceOptions,
        sampler: FrameSampler,
        deliver: Callable[[VideoFrame], None],
        deliver_audio: AudioSink | None = None,
        *,
        tap: FrameTap | None = None,
    ) -> None:
        self._stream_id = stream_id
        # Sees every decoded frame, video and audio, before sampling (the relay).
        self._tap = tap
        self._opts = options
        self._sampler = sampler
        self._deliver = deliver
        # Audio is decoded only when someone listens (speech moderation is on).
        self._deliver_audio = deliver_audio
        self._stop = threading.Event()
        self._wake = threading.Event()
        """Set by ``stop`` and by the worker's end: whichever comes first ends ``run``."""
        self._kind = source_kind(options.url)
        self._decoded = 0
        self._sampled = 0
        self._converter = Converter()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def set_tap(self, tap: FrameTap) -> None:
        """Hand every decoded frame to ``tap`` too (call before ``run``)."""
        self._tap = tap

    def run(self) -> SourceEnd:
        """Blocking: call from a dedicated thread. Returns within ``STOP_GRACE_S`` of
        ``stop``, whatever FFmpeg is blocked in."""
        started = time.monotonic()
        result: list[SourceEnd] = []

        def work() -> None:
            try:
                lower_priority(self._opts.nice)
                result.append(self._run(started))
            except Exception as exc:  # a bug ends this source, not the caller's thread
                log.exception("decoder crashed", extra={"stream_id": self._stream_id})
                result.append(
                    SourceEnd("error", f"internal decoder error: {exc}", self._decoded, 0, 0.0)
                )
            finally:
                self._wake.set()
                metrics.retire_current_thread()

        worker = threading.Thread(target=work, name=f"av-{self._stream_id}", daemon=True)
        worker.start()
        self._wake.wait()
        if not result:
            # Stopped: between packets the loop ends by itself; a blocked open or read
            # is left to its timeout, after which the worker closes the container.
            worker.join(STOP_GRACE_S)
        if result:
            return result[0]
        log.info(
            "stopped while the source was blocked; its worker ends at its own timeout",
            extra={"stream_id": self._stream_id, "source": self._kind},
        )
        took = time.monotonic() - started
        return SourceEnd("stopped", None, self._decoded, self._sampled, took)

    def _run(self, started: float) -> SourceEnd:
        try:
            container = self._open()
        except IngestError as exc:
            if self._stop.is_set():  # the failure is the stop's doing, or moot now
                return SourceEnd("stopped", None, 0, 0, time.monotonic() - started)
            return SourceEnd("error", str(exc), 0, 0, 0.0, exc.retryable)
        try:
            decoded, sampled = self._decode(container)
        except IngestError as exc:
            took = time.monotonic() - started
            if self._stop.is_set():
                return SourceEnd("stopped", None, self._decoded, self._sampled, took)
            cause = INPUT_LOST if isinstance(exc, InputLost) else None
            return SourceEnd(
                "error", str(exc), self._decoded, self._sampled, took, exc.retryable, cause
            )
        finally:
            container.close()
        reason: Literal["eof", "stopped"] = "stopped" if self._stop.is_set() else "eof"
        if reason == "eof" and decoded == 0:
            msg = f"{self._opts.url} ended before any video frame could be decoded"
            return SourceEnd("error", msg, 0, 0, time.monotonic() - started, True)
        return SourceEnd(reason, None, decoded, sampled, time.monotonic() - started)

    def _open(self) -> Any:
        url = self._opts.url
        path = url[len("file://") :] if url.startswith("file://") else url
        timeout = (self._opts.open_timeout_s, self._opts.read_timeout_s)
        container = None
        if self._opts.hwaccel:
            container = _open_hw(path, url, self._opts.hwaccel, timeout)
        try:
            if container is None:
                container = av.open(path, options=_open_options(url), timeout=timeout)
        except (av.error.FFmpegError, OSError) as exc:
            raise IngestError(_describe(url, exc), retryable=True) from exc
        if not container.streams.video:
            container.close()
            raise IngestError(f"{url} has no video stream")
        return container

    def _decode(self, container: Any) -> tuple[int, int]:
        if self._stop.is_set():
            return 0, 0  # stopped while opening: run() may have returned already
        stream = container.streams.video[0]
        stream.thread_type = self._thread_type(stream)
        skipping = self._opts.fast_decode and self._tap is None and not self._opts.hwaccel
        if skipping:
            skip_for_analysis(stream.codec_context)
        decoded = sampled = 0
        errors = 0
        interval = 1.0 / float(stream.average_rate or stream.guessed_rate or Fraction(25))
        # Video and audio share one timeline, so they stay aligned across a jump.
        timeline = Timeline(
            self._opts.max_ts_jump_s,
            interval,
            origin_s=stream_origin(stream),
            offset_s=self._opts.media_offset_s,
            on_jump=self._jumped,
        )
        # Pacing follows packets (ahead of the decoder) on a clock of its own: a jump
        # must neither stall a paced file nor let it burst.
        pace = Timeline(self._opts.max_ts_jump_s, interval)
        t0_wall: float | None = None
        counter = metrics.FRAMES_DECODED.labels(self._kind)
        decode_seconds = metrics.STAGE_SECONDS.labels("decode")
        sample_seconds = metrics.STAGE_SECONDS.labels("sample")
        audio = self._audio_decoder(container, timeline)
        streams = [stream] if audio is None else [stream, audio.stream]
        tapped = self._tapped_audio(container) if audio is None else None
        if tapped is not None:
            streams.append(tapped)
        try:
            for packet in container.demux(*streams):
                if self._stop.is_set():
                    break
                if (
                    self._opts.realtime
                    and packet.stream.index == stream.index
                    and packet.dts is not None
                    and packet.time_base
                ):
                    t_pkt = pace.map(float(packet.dts * packet.time_base))
                    if t0_wall is None:
                        t0_wall = time.monotonic() - t_pkt
                    delay = t0_wall + t_pkt - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                t_arrival = time.time()
                if audio is not None and packet.stream.index == audio.stream.index:
                    audio.packet(packet, t_arrival)
                    continue
                if tapped is not None and packet.stream.index == tapped.index:
                    self._tap_audio(packet, timeline)
                    continue
                started = time.perf_counter()
                try:
                    frames = packet.decode()
                    errors = 0
                    decode_seconds.observe(time.perf_counter() - started)
                except av.error.InvalidDataError:
                    errors += 1
                    metrics.DROPS.labels("decode", "corrupt_packet").inc()
                    if errors >= MAX_CONSECUTIVE_DECODE_ERRORS:
                        raise IngestError(
                            f"{self._opts.url}: {errors} corrupt packets in a row"
                        ) from None
                    continue
                for frame in frames:
                    counter.inc()
                    source_time = _source_time(frame, stream)
                    if source_time is None and skipping:
                        # Unstamped frames are timed by their count: decode them all.
                        stream.codec_context.skip_frame = "DEFAULT"
                        skipping = False
                    stamped = decoded * interval if source_time is None else source_time
                    media_time = max(0.0, timeline.map(stamped))
                    decoded += 1
                    self._decoded = decoded
                    if self._tap is not None:
                        self._tap.video(frame, media_time)
                    started = time.perf_counter()
                    if not self._sampler.admit(media_time):
                        continue
                    if self._stop.is_set():
                        break  # run() may have returned: hand nothing more on
                    sampled += 1
                    self._sampled = sampled
                    video = to_video_frame(
                        frame,
                        self._stream_id,
                        sampled - 1,
                        media_time,
                        t_arrival,
                        self._opts.max_side,
                        source_time_s=source_time,
                        converter=self._converter,
                    )
                    sample_seconds.observe(time.perf_counter() - started)
                    self._deliver(video)
        except av.error.EOFError:
            pass  # the source said it ended
        except av.error.ExitError:
            # FFmpeg gave up waiting: nothing arrived for read_timeout_s.
            if self._lost_when_silent(decoded):
                raise InputLost(
                    f"input lost: nothing arrived from {self._opts.url} for "
                    f"{self._opts.read_timeout_s:g} s (ingest.read_timeout_s) "
                    f"after {decoded} frames"
                ) from None
        except (av.error.FFmpegError, OSError) as exc:
            if decoded == 0:
                raise IngestError(_describe(self._opts.url, exc), retryable=True) from exc
            if self._kind != "file":
                # A connection reset or cut mid-stream: the server or publisher died.
                raise InputLost(
                    f"input lost: {self._opts.url} broke after {decoded} frames: {exc}"
                ) from exc
            raise IngestError(
                f"{self._opts.url} broke after {decoded} frames: {exc}", retryable=True
            ) from exc
        finally:
            if audio is not None:
                audio.close()
        return decoded, sampled

    def _lost_when_silent(self, decoded: int) -> bool:
        """Whether a read timeout after ``decoded`` frames means the feed was lost.

        Not for RTMP: nginx-rtmp tells a player nothing when its publisher leaves
        (unless ``publish_notify`` is on), so silence is how an RTMP stream ends.
        """
        if self._stop.is_set() or decoded == 0:
            return False
        return self._kind not in ("file", "rtmp", "rtmps")

    def _thread_type(self, stream: Any) -> str:
        """FFmpeg threading for ``stream``: none up to ``threaded_pixels`` (one stream
        among many: measured 10-13 % less decode CPU than FFmpeg's frame threads at 12
        paced 360p streams on two cores), frame and slice threads above, and slice
        threads alone above ``max_pixels``, where each frame thread would hold its own
        set of full-size pictures (about 50 MB a picture at 7680x4320)."""
        ctx = stream.codec_context
        pixels = int(ctx.width or 0) * int(ctx.height or 0)
        if 0 < pixels <= self._opts.threaded_pixels:
            ctx.thread_count = 1
            return "NONE"
        if pixels <= self._opts.max_pixels:
            return "AUTO"
        log.warning(
            "picture larger than ingest.max_pixels: decoding without frame threads",
            extra={
                "stream_id": self._stream_id,
                "width": ctx.width,
                "height": ctx.height,
                "max_pixels": self._opts.max_pixels,
            },
        )
        return "SLICE"

    def _jumped(self, jump: Jump) -> None:
        metrics.TIMESTAMP_DISCONTINUITIES.labels(jump.kind).inc()
        log.warning(
            "source timestamps jumped; the session timeline continues",
            extra={
                "stream_id": self._stream_id,
                "kind": jump.kind,
                "track": jump.track,
                "source_from_s": round(jump.from_s, 3),
                "source_to_s": round(jump.to_s, 3),
                "session_s": round(jump.session_s, 3),
            },
        )

    def _tapped_audio(self, container: Any) -> Any:
        """The audio stream to decode for the tap alone (speech moderation off)."""
        if self._tap is None or not container.streams.audio:
            return None
        return container.streams.audio[0]

    def _tap_audio(self, packet: Any, timeline: Timeline) -> None:
        tap = self._tap
        assert tap is not None
        try:
            frames = packet.decode()
        except (av.error.FFmpegError, ValueError):
            metrics.DROPS.labels("audio", "corrupt_packet").inc()
            return
        for frame in frames:
            if frame.pts is not None and frame.time_base is not None:
                t = max(0.0, timeline.map(float(frame.pts * frame.time_base), "audio"))
                tap.audio(frame, t)

    def _audio_decoder(self, container: Any, timeline: Timeline) -> AudioDecoder | None:
        if self._deliver_audio is None:
            return None
        if not container.streams.audio:
            self._deliver_audio(AudioUnavailable(self._stream_id, "the source has no audio track"))
            return None

        def clock(source_s: float) -> float:
            return timeline.map(source_s, "audio")

        decoder = AudioDecoder(
            self._stream_id,
            container.streams.audio[0],
            clock,
            self._deliver_audio,
            tap=self._tap.audio if self._tap is not None else None,
        )
        if not decoder.stream.codec_context or not decoder.stream.codec_context.sample_rate:
            decoder.unavailable("the audio track cannot be decoded (unknown format)")
            return None
        return decoder


class Converter:
    """RGB conversion for one stream's samples: one swscale context kept from frame to
    frame, one thread per call (the daemon runs streams side by side). An
    ``av.VideoFrame``'s own ``to_ndarray`` sets up a scaler with its own threads for every
    frame: p50 0.46 against 0.12 ms a 360p sample, 3.9 against 2.7 ms a 1080p one scaled
    to 640x360 (``benchmarks/handoff.py``, docs/benchmark-results/handoff.json), the same
    pixels. Safe to call from any thread: a
    lazy sample is converted by whichever thread reads it first."""

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()
        self._lock = threading.Lock()

    def rgb(self, frame: Any, size: tuple[int, int]) -> Image:
        """``frame`` as RGB at ``size`` (width, height)."""
        with self._lock:
            out = self._reformatter.reformat(
                frame, width=size[0], height=size[1], format="rgb24", threads=1
            )
            return cast(Image, out.to_ndarray())

    def timed_rgb(self, frame: Any, size: tuple[int, int]) -> Image:
        """``rgb``, timed as the deferred conversion (stage ``convert``)."""
        started = time.perf_counter()
        image = self.rgb(frame, size)
        metrics.STAGE_SECONDS.labels("convert").observe(time.perf_counter() - started)
        return image


def to_video_frame(
    frame: Any,
    stream_id: str,
    index: int,
    media_time: float,
    t_arrival: float,
    max_side: int,
    *,
    source_time_s: float | None = None,
    converter: Converter | None = None,
) -> VideoFrame:
    """An admitted ``av.VideoFrame`` for analysis: RGB with its longer side scaled to
    ``max_side`` at most (in swscale, with the colour conversion: analysis needs no more
    pixels).

    A 4:2:0 limited-range picture no larger than that (what H.264 and VP8 publishers
    send at 360p) is handed on as its planes, and converted only when something reads
    ``image``: the change measures read the planes, so a sample that reuses its scores
    costs no conversion. ``converter``: the stream's (a fresh one without it)."""
    convert = converter or Converter()
    width, height = int(frame.width), int(frame.height)
    scale = min(1.0, max_side / max(width, height))
    size = (width, height)
    if scale < 1.0:
        size = (max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2))
    # A picture larger than analysis needs is scaled now: held until it is read, the
    # source-size frame would keep far more memory than the picture analysis sees.
    planes = frame_planes(frame) if scale == 1.0 else None
    if planes is None:
        return VideoFrame(
            stream_id,
            index,
            media_time,
            t_arrival,
            convert.rgb(frame, size),
            width,
            height,
            source_time_s=source_time_s,
        )
    return VideoFrame(
        stream_id,
        index,
        media_time,
        t_arrival,
        None,
        width,
        height,
        source_time_s=source_time_s,
        planes=planes,
        convert=partial(convert.timed_rgb, frame, size),
        size=size,
    )


def frame_planes(frame: Any) -> Planes | None:
    """Views of a decoded frame's 4:2:0 planes (limited range, even size), else None.

    The views keep the decoder's frame alive (FFmpeg's buffers are reference counted,
    so the decoder never writes into a picture handed out)."""
    if frame.format.name != "yuv420p" or int(frame.color_range) == _FULL_RANGE:
        return None
    if frame.width % 2 or frame.height % 2:
        return None
    y, u, v = (_plane(plane) for plane in frame.planes[:3])
    return Planes(y, u, v)


_FULL_RANGE = 2
"""``AVCOL_RANGE_JPEG``: full-range levels (yuvj), which the change measures do not read."""


def _plane(plane: Any) -> Plane:
    rows = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
    return rows[: plane.height, : plane.width]


def _source_time(frame: Any, stream: Any) -> float | None:
    """The frame's timestamp as the source stamped it, in seconds (None: unstamped)."""
    if frame.pts is None or stream.time_base is None:
        return None
    return float(frame.pts * stream.time_base)
