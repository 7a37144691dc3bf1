"""Synthesized speech media for tests, benchmarks and the demo.

Sentences are spoken by ``espeak-ng`` (a Debian package the set-up installs) and
laid out on a timeline with silence and noise, so every word's time is known;
the track is muxed with a moving test pattern into a real file with PyAV.
Nothing is downloaded or checked in.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.stream import AudioStream

from livemod.messages import AUDIO_RATE, Samples
from livemod.testing import media as testmedia

EVERYDAY = (
    "The weather today is sunny and warm.",
    "Please open the window before dinner.",
    "My brother plays the guitar every evening.",
    "We walked along the river to the old bridge.",
    "The children are reading books in the library.",
    "Turn left at the second traffic light.",
    "She bought fresh bread at the market.",
    "The train to the city leaves at noon.",
    "Our neighbours planted roses in the garden.",
    "He fixed the old clock on the kitchen wall.",
)
"""Benign sentences that espeak-ng says clearly, for speech tests and benchmarks."""
THREAT = "I will kill you tonight."
"""A spoken threat the default text policy flags (violence)."""


@dataclass(frozen=True, slots=True)
class Part:
    """A piece of the timeline: ``text`` spoken, or ``seconds`` of silence or noise."""

    text: str = ""
    seconds: float = 0.0
    noise: float = 0.0
    """RMS level of white noise (0: silence) when ``text`` is empty."""
    music: bool = False
    """A four-note melody instead of noise (tones with a harmonic, 4 notes a second)."""


@dataclass(frozen=True, slots=True)
class Placed:
    part: Part
    start_s: float
    end_s: float
    speech_start_s: float
    """Where the voice starts and stops (espeak pads its output with a little silence)."""
    speech_end_s: float


def speak(text: str, *, voice: str = "en-us", words_per_minute: int = 160) -> Samples:
    """``text`` spoken by espeak-ng, as 16 kHz mono float32."""
    with tempfile.TemporaryDirectory(prefix="livemod-tts-") as tmp:
        wav = Path(tmp) / "say.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        return load_audio(wav)


def load_audio(path: Path) -> Samples:
    """Any file FFmpeg reads, resampled to 16 kHz mono float32."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    parts: list[Samples] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1))
        for out in resampler.resample(None):
            parts.append(np.asarray(out.to_ndarray(), dtype=np.float32).reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _voiced(samples: Samples) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    if not len(loud):
        return 0.0, 0.0
    return loud[0] / AUDIO_RATE, (loud[-1] + 1) / AUDIO_RATE


def melody(seconds: float) -> Samples:
    """Tones a quarter second each: music, for the hallucination guard."""
    t = np.arange(round(seconds * AUDIO_RATE)) / AUDIO_RATE
    notes = np.array([261.6, 329.6, 392.0, 523.3])
    freq = notes[(t * 4).astype(np.intp) % len(notes)]
    wave = 0.2 * np.sin(2 * np.pi * freq * t) + 0.1 * np.sin(4 * np.pi * freq * t)
    return wave.astype(np.float32)


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation, for scoring."""
    return [w for w in (re.sub(r"[^\w']", "", x.lower()) for x in text.split()) if w]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words (Levenshtein on words)."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    if not ref:
        return float(len(hyp) > 0)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


def compose(parts: Sequence[Part], *, seed: int = 0) -> tuple[Samples, list[Placed]]:
    """Lay the parts end to end; return the track and where each part landed."""
    rng = np.random.default_rng(seed)
    pieces: list[Samples] = []
    placed: list[Placed] = []
    t = 0.0
    for part in parts:
        if part.text:
            audio = speak(part.text)
            v0, v1 = _voiced(audio)
        elif part.music:
            audio = melody(part.seconds)
            v0 = v1 = 0.0
        else:
            n = round(part.seconds * AUDIO_RATE)
            audio = (rng.standard_normal(n) * part.noise).astype(np.float32)
            v0 = v1 = 0.0
        duration = len(audio) / AUDIO_RATE
        placed.append(Placed(part, t, t + duration, t + v0, t + v1))
        pieces.append(audio)
        t += duration
    track = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return np.clip(track, -1.0, 1.0).astype(np.float32), placed


def mux_clip(
    path: Path,
    audio: Samples | None,
    duration_s: float | None = None,
    *,
    fps: int = 10,
    size: tuple[int, int] = (320, 180),
    corrupt_audio: bool = False,
) -> float:
    """Write a clip: a moving pattern and ``audio`` as AAC. Returns its duration.

    ``corrupt_audio`` writes an AAC track of random bytes (undecodable) instead;
    ``audio=None`` writes no audio track at all.
    """
    if duration_s is None:
        duration_s = len(audio) / AUDIO_RATE if audio is not None else 5.0
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    with av.open(str(path), mode="w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.time_base = Fraction(1, fps)
        video.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps * 2)}
        sound: AudioStream | None = None
        if audio is not None or corrupt_audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
            sound.time_base = Fraction(1, AUDIO_RATE)
        frames = round(duration_s * fps)
        hop = AUDIO_RATE // fps
        samples = audio if audio is not None else np.zeros(0, np.float32)
        for i in range(frames):
            img = testmedia.pattern(i / fps, size)
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = i
            for packet in video.encode(vf):
                out.mux(packet)
            if sound is None:
                continue
            if corrupt_audio:
                junk = av.Packet(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
                junk.stream = sound
                junk.pts = junk.dts = i * hop
                junk.time_base = Fraction(1, AUDIO_RATE)
                out.mux(junk)
                continue
            block = samples[i * hop : (i + 1) * hop]
            if len(block) < hop:
                block = np.pad(block, (0, hop - len(block)))
            af = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="mono")
            af.sample_rate = AUDIO_RATE
            af.pts = i * hop
            for packet in sound.encode(af):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None and not corrupt_audio:
            for packet in sound.encode():
                out.mux(packet)
    return frames / fps
