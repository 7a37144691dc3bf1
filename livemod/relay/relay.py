"""One session's moderated relay: a delay line of every decoded frame and its audio,
treated by the plan and written out by its own thread.

The decode thread hands in every frame and audio frame (:meth:`Relay.video`,
:meth:`Relay.audio`: cheap, no copy of the picture); the event loop hands in each
analyzed sample (:meth:`Relay.observe`) and each decision (:meth:`Relay.decide`);
the relay thread releases frames when :func:`~livemod.relay.plan.gate` allows,
treats them and encodes them. The buffer is bounded by ``max_delay_s``: a frame that
old leaves whatever happens (counted as late).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from livemod import metrics
from livemod.logs import redact_credentials
from livemod.messages import Decision, Region
from livemod.relay.output import AUDIO_OUT_RATE, EncoderSettings, Planar, ResilientOutput
from livemod.relay.picture import pixelate, slate
from livemod.relay.plan import Cover, Plan, gate

log = logging.getLogger(__name__)

END_SLATE_S = 2.0
"""After an ``end``, the slate is shown this long before the output closes."""
RESYNC_S = 0.2
HOLD_POLL_S = 0.02
MAX_DELAYS_KEPT = 20_000

OnRelayEvent = Callable[[str, dict[str, Any]], None]
"""Called from the relay thread with a state (started, held, resumed, output_failed,
ended) and its fields."""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    target: str
    """The rendered output: an rtmp:// URL or an HLS directory."""
    delay_s: float = 3.0
    max_delay_s: float = 8.0
    lookahead_s: float = 1.0
    """How far past a frame analysis must have looked before it may leave."""
    speech_lookahead_s: float | None = None
    """When the session moderates speech: how far past a frame speech moderation must
    have judged before it may leave (None: the relay does not wait for speech)."""
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    slate_text: str = "Stream paused"
    slate_image: Path | None = None
    margin: float = 0.15
    treat: frozenset[str] = frozenset({"blur", "mute", "pause", "end"})
    record: bool = False
    """Keep (media time, cover kind) of every frame written (benchmarks)."""


@dataclass(slots=True)
class _Frame:
    t: float
    arrival: float
    frame: Any


class Relay:
    """The delay line, the plan and the output of one session."""

    def __init__(
        self,
        stream_id: str,
        settings: RelaySettings,
        on_event: OnRelayEvent | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_id = stream_id
        self.settings = settings
        self._on_event = on_event
        self._clock = clock
        self._plan = Plan(margin=settings.margin, treat_actions=settings.treat)
        self._cond = threading.Condition()
        self._video: deque[_Frame] = deque()
        self._max_frames = int(settings.max_delay_s * 120) + 120
        # Bounded: audio that no picture takes along (video stalled) is dropped oldest first.
        self._audio: deque[tuple[float, Planar]] = deque(maxlen=4 * self._max_frames)
        self._resampler: Any = None
        self._audio_clock: float | None = None
        self._has_audio = False
        self._closing = False
        self._final = False
        self._thread: threading.Thread | None = None
        self._output = ResilientOutput(settings.target, settings.encoder, on_change=self._changed)
        self._t0: float | None = None
        self._next_sample: int | None = None
        self._slates: dict[tuple[int, int], np.ndarray[Any, Any]] = {}
        self._ended = False
        self._end_slate_until: float | None = None
        self.state = "starting"
        self.frames_in = 0
        self.frames_overflowed = 0
        self.frames_treated = 0
        self.treated_by: dict[str, int] = {}
        self.holds = 0
        self.held_s = 0.0
        self._held_since: float | None = None
        self.late_frames = 0
        self.late_decisions = 0
        self._speech_horizon = float("-inf")
        self._speech_wait = settings.speech_lookahead_s is not None
        self.speech_holds = 0
        """Holds that speech moderation caused (it lagged while video was settled)."""
        self.released_t = float("-inf")
        self.last_delay_s = 0.0
        self.delays: deque[float] = deque(maxlen=MAX_DELAYS_KEPT)
        self.covers: list[tuple[float, str]] = []

    # -- decode thread ---------------------------------------------------------------

    def video(self, frame: Any, media_time_s: float) -> None:
        """Every decoded picture, with its session media time. Thread-safe."""
        with self._cond:
            if self._closing:
                return
            if len(self._video) >= 2 * self._max_frames:
                # The encoder cannot keep up: drop rather than grow without bound (a
                # dropped frame reaches no viewer, treated or not).
                self._video.popleft()
                self.frames_overflowed += 1
                metrics.DROPS.labels("relay", "overflow").inc()
            self._video.append(_Frame(media_time_s, self._clock(), frame))
            self.frames_in += 1
            self._cond.notify()

    def audio(self, frame: Any, media_time_s: float) -> None:
        """Every decoded audio frame, with its session media time. Decode thread only."""
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_OUT_RATE)
        clock = self._audio_clock
        if clock is None or abs(media_time_s - clock) > RESYNC_S:
            clock = media_time_s
        out: list[tuple[float, Planar]] = []
        for res in self._resampler.resample(frame):
            data = np.asarray(res.to_ndarray(), dtype=np.float32)
            if data.ndim == 1:
                data = np.vstack([data, data])
            out.append((clock, data))
            clock += data.shape[1] / AUDIO_OUT_RATE
        self._audio_clock = clock
        if out:
            with self._cond:
                self._has_audio = True
                self._audio.extend(out)

    # -- event loop ------------------------------------------------------------------

    def observe(self, media_time_s: float, regions: Mapping[str, Sequence[Region]]) -> None:
        """One analyzed sample: analysis has looked this far; the boxes it saw."""
        with self._cond:
            self._plan.sample(media_time_s, regions)
            self._cond.notify()

    def speech(self, media_time_s: float) -> None:
        """Speech moderation has judged (and decided on) the audio before this time."""
        with self._cond:
            if media_time_s > self._speech_horizon:
                self._speech_horizon = media_time_s
                self._cond.notify()

    def speech_off(self) -> None:
        """The audio is not moderated (no track, undecodable): stop waiting for it."""
        with self._cond:
            self._speech_wait = False
            self._cond.notify()

    def decide(self, decision: Decision) -> None:
        """A decision of the session's vote (start or stop of an action)."""
        with self._cond:
            start = self._plan.decide(decision)
            if start is not None and start < self.released_t:
                # Its first frames already left: the delay was too short for this one.
                self.late_decisions += 1
                metrics.RELAY_LATE.labels("decision").inc()
                log.warning(
                    "a decision came after its frames left the relay",
                    extra={
                        "stream_id": self.stream_id,
                        "category": decision.category,
                        "onset_s": round(start, 3),
                        "released_s": round(self.released_t, 3),
                    },
                )
            self._cond.notify()

    def status(self) -> dict[str, Any]:
        """The relay's part of ``GET /v1/streams/{id}``."""
        out = self._output
        frames = out.frames_out
        return {
            "output": redact_credentials(self.settings.target),
            "state": self.state,
            "delay_s": self.settings.delay_s,
            "max_delay_s": self.settings.max_delay_s,
            "current_delay_s": round(self.last_delay_s, 3),
            "buffered_frames": len(self._video),
            "frames_in": self.frames_in,
            "frames_out": frames,
            "frames_treated": self.frames_treated,
            "treated_by_action": dict(self.treated_by),
            "frames_dropped": out.frames_dropped + self.frames_overflowed,
            "holds": self.holds,
            "held_s": round(self.held_s, 3),
            "late_frames": self.late_frames,
            "late_decisions": self.late_decisions,
            "output_failures": out.failures_total,
            "output_error": out.error,
            "encode_ms_per_frame": round(1000 * out.encode_s / frames, 2) if frames else None,
        }

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"relay-{self.stream_id}", daemon=True
        )
        self._thread.start()

    def close(self, *, drain: bool = True, timeout: float = 30.0) -> None:
        """Blocking. ``drain``: the stream ended; every decision is in, so what is
        buffered leaves now. Otherwise what is buffered is dropped."""
        with self._cond:
            self._closing = True
            self._final = True
            if not drain:
                self._video.clear()
                self._audio.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- relay thread ----------------------------------------------------------------

    def _changed(self, state: str, error: str | None) -> None:
        if state in ("started", "resumed"):
            self.state = "live"
        elif state == "output_failed":
            self.state = "output_down"
            metrics.RELAY_OUTPUT_FAILURES.inc()
        self._event(state, error=error)

    def _event(self, state: str, **fields: Any) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(state, {k: v for k, v in fields.items() if v is not None})
        except Exception:  # an event hook must never stop the output
            log.exception("relay event hook failed", extra={"stream_id": self.stream_id})

    def _run(self) -> None:
        try:
            while True:
                picked = self._pick()
                if picked is None:
                    break
                item, cover, audio = picked
                self._write(item, cover, audio)
        except Exception:  # a bug ends this relay, never the session
            log.exception("relay crashed", extra={"stream_id": self.stream_id})
            self.state = "failed"
        finally:
            self._output.close()
            metrics.retire_current_thread()
            if not self._ended:
                self._event("ended", frames=self._output.frames_out)
            if self.state != "failed":
                self.state = "ended"

    def _pick(self) -> tuple[_Frame, Cover, list[tuple[Planar, int]]] | None:
        """The next frame to release, its cover and its audio; None when done."""
        s = self.settings
        with self._cond:
            while True:
                if not self._video:
                    if self._closing:
                        return None
                    self._cond.wait(0.1)
                    continue
                head = self._video[0]
                now = self._clock()
                verdict = gate(
                    now=now,
                    arrival=head.arrival,
                    t=head.t,
                    horizon_s=self._plan.horizon_s,
                    lookahead_s=s.lookahead_s,
                    delay_s=s.delay_s,
                    max_delay_s=s.max_delay_s,
                    final=self._final,
                    speech_horizon_s=self._speech_horizon if self._speech_wait else None,
                    speech_lookahead_s=s.speech_lookahead_s or 0.0,
                )
                if verdict == "wait" and len(self._video) <= self._max_frames:
                    self._cond.wait(max(0.001, head.arrival + s.delay_s - now))
                    continue
                if verdict == "hold" and len(self._video) <= self._max_frames:
                    if self._held_since is None:
                        self._held_since = now
                        self.holds += 1
                        metrics.RELAY_HOLDS.inc()
                        if self._plan.horizon_s >= head.t + s.lookahead_s:
                            self.speech_holds += 1  # video is settled: speech lags
                        self._event("held", media_time_s=round(head.t, 3))
                    self._cond.wait(HOLD_POLL_S)
                    continue
                break
            self._video.popleft()
            if self._held_since is not None:
                held = now - self._held_since
                self.held_s += held
                self._held_since = None
                self._event("resumed", held_s=round(held, 3), media_time_s=round(head.t, 3))
            if verdict in ("late", "hold"):
                self.late_frames += 1
                metrics.RELAY_LATE.labels("frame").inc()
            self.released_t = max(self.released_t, head.t)
            cover = self._plan.video(head.t)
            audio = self._take_audio(head.t)
            self._plan.forget_before(head.t)
            return head, cover, audio

    def _take_audio(self, until: float) -> list[tuple[Planar, int]]:
        """The audio up to ``until`` (the frame being released), silenced where a
        mute, pause or end covers it, with its output sample position."""
        out: list[tuple[Planar, int]] = []
        t0 = self._t0 if self._t0 is not None else until
        while self._audio and self._audio[0][0] <= until:
            t, samples = self._audio.popleft()
            n = samples.shape[1]
            end = t + n / AUDIO_OUT_RATE
            if end <= t0:
                continue
            for a, b in self._plan.silent(t, end):
                i = max(0, int((a - t) * AUDIO_OUT_RATE))
                j = min(n, int(np.ceil((b - t) * AUDIO_OUT_RATE)))
                if j > i:
                    samples = samples.copy() if not samples.flags.writeable else samples
                    samples[:, i:j] = 0.0
            at = round((t - t0) * AUDIO_OUT_RATE)
            nxt = self._next_sample
            if nxt is not None and abs(at - nxt) <= RESYNC_S * AUDIO_OUT_RATE:
                at = nxt  # continuous: no gaps or overlaps from rounding
            elif nxt is not None and at < nxt:
                continue  # behind what was written: drop rather than overlap
            if at < 0:
                samples = samples[:, -at:]
                at = 0
            self._next_sample = at + samples.shape[1]
            out.append((samples, at))
        return out

    def _write(self, item: _Frame, cover: Cover, audio: list[tuple[Planar, int]]) -> None:
        s = self.settings
        if self._ended:
            return
        if self._t0 is None:
            self._t0 = item.t
        frame = item.frame
        picture: Any = frame
        if cover.kind != "none":
            self.frames_treated += 1
            for action in cover.actions:
                self.treated_by[action] = self.treated_by.get(action, 0) + 1
                metrics.RELAY_TREATED.labels(action).inc()
        if cover.kind == "slate":
            picture = self._slate(int(frame.width), int(frame.height))
        elif cover.kind == "whole":
            picture = pixelate(frame.to_ndarray(format="rgb24"))
        elif cover.kind == "regions":
            image = frame.to_ndarray(format="rgb24")
            h, w = image.shape[:2]
            picture = pixelate(image, self._plan.grow(cover.boxes, w, h))
        if s.record:
            self.covers.append((item.t, cover.kind))
        if self._output.write(picture, item.t - self._t0, audio, self._has_audio):
            delay = self._clock() - item.arrival
            self.last_delay_s = delay
            self.delays.append(delay)
            metrics.RELAY_DELAY.observe(delay)
        else:
            metrics.DROPS.labels("relay", "output_down").inc()
        if self._plan.ended_at is not None and item.t > self._plan.ended_at:
            if self._end_slate_until is None:
                self._end_slate_until = item.t + END_SLATE_S
            elif item.t >= self._end_slate_until:
                self._ended = True
                self._output.close()
                self._event("ended", reason="end action", frames=self._output.frames_out)

    def _slate(self, width: int, height: int) -> np.ndarray[Any, Any]:
        key = (width, height)
        if key not in self._slates:
            s = self.settings
            self._slates[key] = slate(width, height, s.slate_text, s.slate_image)
        return self._slates[key].copy()
