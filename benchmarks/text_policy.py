"""The text judge against the word list: precision and recall per category.

1. Text: the held-back part of ``data/text_judge/labelled.txt`` (never trained on; the split
   is fixed by each line's sha256), and every line of ``data/text_judge/blind.txt``
   (evaluation only, written by writers who never saw the labelled set; ``text_blind``).
   A line counts as flagged for a category when any hit of that category falls in it.
   Three judges: the shipped word list and patterns alone (``list``), the learned heads
   alone (``judge``), both (``both``, what the daemon runs).
   Hard negatives (gaming, sports, cooking, news, quotes, chat) must get no hit at all.
   The held-back lines of ``corrections.txt`` (sentences the judge got wrong in use, taught
   to the heads only) are reported apart, under ``text.corrections``, and the sign-offs of
   ``signoffs.txt`` (evaluation only) under ``text.signoffs``.
2. Speech: sentences spoken by espeak-ng with several voices and speeds, transcribed by
   livemod's Whisper engine (tiny.en int8, one call per sentence), then judged as above:
   recall on the spoken threats and hits on the spoken hard negatives.
3. Pieces (``benign_pieces``): the judge on the first and last words of every hard-negative
   line, held back and blind, as a transcript shows them (``--quick``: every 10th line).
4. A benign stream (``benign_stream``): every 6th blind hard-negative line (``--quick``:
   every 120th) spoken one after another and scanned through the speech path; the mutes
   per hour of benign speech.

    .venv/bin/python benchmarks/text_policy.py [--quick] [--heads PATH]

``--heads`` judges with another heads file (its encoder is the one the file names: e.g. heads
trained for the frozen MiniLM with ``scripts/train_text_judge.py --encoder base``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from livemod.text.dataset import (
    BLIND_SET,
    CATEGORIES,
    CORRECTIONS_SET,
    SIGNOFFS_SET,
    Example,
    load_labelled,
    pieces,
)
from livemod.text.judge import TextPolicy
from livemod.text.learned import DEFAULT_HEADS, TextJudge

Judge = Callable[[str], set[str]]

SPOKEN_HARMFUL = (
    ("violence", "I know your address, and I am coming over tonight with a knife."),
    ("violence", "We found out where you live, and we are coming for you tonight."),
    ("violence", "Watch your back, I will be waiting outside your house."),
    ("harassment", "You are a pathetic loser and nobody wants you here."),
    ("self_harm", "I have the pills ready, this is my last stream."),
    ("hate", "Those people are animals and should be thrown out of the country."),
)
SPOKEN_BENIGN = (
    "I killed the boss on my first try.",
    "We destroyed them in the last round.",
    "Cut the onions and beat the eggs.",
    "The striker shot from the halfway line and scored.",
    "Police arrested a man after a stabbing downtown.",
    "My sister is coming over tonight with a cake.",
)
VOICES = (("en-us", 160), ("en-gb", 140), ("en-us+f3", 180), ("en-gb-x-rp", 200))


def prf(flagged: list[bool], truth: list[bool]) -> dict[str, Any]:
    tp = sum(f and t for f, t in zip(flagged, truth, strict=True))
    fp = sum(f and not t for f, t in zip(flagged, truth, strict=True))
    fn = sum(t and not f for f, t in zip(flagged, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return {
        "precision": None if precision is None else round(precision, 3),
        "recall": None if recall is None else round(recall, 3),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def judges(full: TextPolicy) -> dict[str, Judge]:
    lexicon = full.without_judge()
    learned = full.judge
    assert learned is not None, "the shipped text policy has the judge on"
    return {
        "list": lambda t: {h.category for h in lexicon.evaluate(t)},
        "judge": lambda t: {h.category for h in learned.judge(t)},
        "both": lambda t: {h.category for h in full.evaluate(t)},
    }


def judge_lines(full: TextPolicy, lines: Sequence[Example]) -> dict[str, Any]:
    """Each judge's precision and recall per category over ``lines``, its hard-negative
    hits and its misses."""
    out: dict[str, Any] = {}
    for name, judge in judges(full).items():
        started = time.perf_counter()
        found = [judge(e.text) for e in lines]
        ms = (time.perf_counter() - started) * 1000 / max(len(lines), 1)
        per = {c: prf([c in f for f in found], [e.label == c for e in lines]) for c in CATEGORIES}
        negatives = [(e, f) for e, f in zip(lines, found, strict=True) if e.negative]
        out[name] = {
            "per_category": per,
            "hard_negative_lines_hit": sum(1 for _, f in negatives if f),
            "hard_negatives_hit": sorted(e.text for e, f in negatives if f),
            "missed": sorted(
                f"{e.label}: {e.text}"
                for e, f in zip(lines, found, strict=True)
                if not e.negative and e.label not in f
            ),
            "ms_per_line": round(ms, 2),
        }
    return out


def evaluate_text(full: TextPolicy) -> dict[str, Any]:
    data = load_labelled()
    held = data.split(held_back=True)
    corrections = load_labelled(CORRECTIONS_SET)
    corrected = corrections.split(held_back=True)
    return {
        "held_back_lines": len(held),
        "held_back_hard_negatives": sum(1 for e in held if e.negative),
        "labelled_set_lines": len(data.examples),
        "labelled_set_sha256": data.sha256,
        **judge_lines(full, held),
        "corrections": {
            "held_back_lines": len(corrected),
            "sha256": corrections.sha256,
            **judge_lines(full, corrected),
        },
        "signoffs": judge_lines(full, load_labelled(SIGNOFFS_SET).examples),
    }


def evaluate_blind(full: TextPolicy) -> dict[str, Any]:
    blind = load_labelled(BLIND_SET)
    return {
        "lines": len(blind.examples),
        "hard_negatives": sum(1 for e in blind.examples if e.negative),
        "sha256": blind.sha256,
        **judge_lines(full, blind.examples),
    }


def evaluate_pieces(full: TextPolicy, every: int) -> dict[str, Any]:
    """The judge on the pieces of the hard-negative lines (held back and blind) that a
    transcript shows it (``pieces``: first and last words), every ``every``-th line."""
    learned = full.judge
    assert learned is not None
    out: dict[str, Any] = {"lines_taken": f"every {every}"}
    for name, lines in (
        ("held_back", load_labelled().split(held_back=True)),
        ("blind", load_labelled(BLIND_SET).examples),
    ):
        negatives = [e for e in lines if e.negative][::every]
        hit: list[str] = []
        lines_hit = 0
        total = 0
        for e in negatives:
            cut = pieces(e.text)
            flagged = [p for p in cut if learned.judge(p)]
            total += len(cut)
            hit += flagged
            lines_hit += bool(flagged)
        out[name] = {
            "hard_negative_lines": len(negatives),
            "pieces": total,
            "pieces_hit": len(hit),
            "pieces_hit_rate": round(len(hit) / max(total, 1), 4),
            "lines_with_a_piece_hit": lines_hit,
            "sample_hits": hit[:: max(1, len(hit) // 25)][:25],
        }
    return out


def evaluate_stream(full: TextPolicy, heads: Path | None, every: int) -> dict[str, Any]:
    """Hard-negative lines of the blind set (every ``every``-th), spoken one after another by
    espeak-ng with short pauses (Whisper runs some together), scanned through the daemon's
    speech path (``livemod scan``: streaming Whisper, the transcript reader, the vote): the
    mutes per hour of benign speech, each with what was heard."""
    import asyncio
    import tempfile

    import yaml

    from livemod.app.scan import scan
    from livemod.config import load_config
    from livemod.messages import AUDIO_RATE
    from livemod.paths import REPO_ROOT
    from livemod.testing import speech as ts

    lines = [e.text for e in load_labelled(BLIND_SET).examples if e.negative][::every]
    parts = [ts.Part(seconds=1.0)]
    for i, text in enumerate(lines):
        parts += [ts.Part(text), ts.Part(seconds=0.4 if i % 2 else 1.0, noise=0.01)]
    track, placed = ts.compose(parts)
    with tempfile.TemporaryDirectory(prefix="livemod-textbench-") as tmp:
        clip = Path(tmp) / "benign.mp4"
        ts.mux_clip(clip, track)
        environ = {"LIVEMOD_ASR__ENABLED": "true", "LIVEMOD_VISION__MODELS": "[]"}
        if heads is not None:
            policy = yaml.safe_load((REPO_ROOT / "configs" / "text_policy.yaml").read_text())
            policy["judge"] = {"heads": str(heads.resolve())}
            path = Path(tmp) / "text_policy.yaml"
            path.write_text(yaml.safe_dump(policy))
            environ["LIVEMOD_ASR__TEXT_POLICY"] = str(path)
        started = time.perf_counter()
        report = asyncio.run(scan(load_config(None, environ=environ), str(clip)))
    speech_s = sum(p.speech_end_s - p.speech_start_s for p in placed if p.part.text)
    mutes = [a for a in report["actions"] if a["action"] == "mute" and a["state"] == "start"]

    def said(span: list[float]) -> list[str]:
        """The lines the muted span overlaps."""
        lo, hi = span
        return [p.part.text for p in placed if p.part.text and p.start_s < hi and lo < p.end_s]

    lexicon = full.without_judge()
    learned = full.judge
    assert learned is not None

    def event(m: dict[str, Any]) -> dict[str, Any]:
        heard = said(m["span_s"]) if m.get("span_s") else []
        return {
            "category": m["category"],
            "span_s": m["span_s"],
            "said": " | ".join(heard),
            # What each part finds in the lines as written (not as Whisper heard them).
            "word_list_flags": sorted({h.category for t in heard for h in lexicon.evaluate(t)}),
            "judge_flags": sorted({h.category for t in heard for h in learned.judge(t)}),
        }

    events = [event(m) for m in mutes]
    return {
        "lines": len(lines),
        "voice": "en-us@160 (espeak-ng default)",
        "clip_s": round(len(track) / AUDIO_RATE, 1),
        "speech_s": round(speech_s, 1),
        "words_heard": report["speech"]["words"],
        "scan_s": round(time.perf_counter() - started, 1),
        "mutes": len(mutes),
        "mutes_per_speech_hour": round(len(mutes) * 3600.0 / max(speech_s, 1e-9), 1),
        "mutes_the_word_list_explains": sum(
            1 for e in events if e["category"] in e["word_list_flags"]
        ),
        "mute_events": events,
    }


def evaluate_speech(full: TextPolicy, voices: Sequence[tuple[str, int]]) -> dict[str, Any]:
    from livemod.speech.whisper import WhisperEngine
    from livemod.testing import speech as ts

    engine = WhisperEngine(threads=2)
    rows: list[dict[str, Any]] = []
    for voice, wpm in voices:
        for label, text in [*SPOKEN_HARMFUL, *((None, t) for t in SPOKEN_BENIGN)]:
            audio = ts.speak(text, voice=voice, words_per_minute=wpm)
            padded = np.concatenate([np.zeros(8000, np.float32), audio, np.zeros(8000, np.float32)])
            said = " ".join(w.text for w in engine.transcribe(padded, 0.0).words)
            rows.append({"voice": f"{voice}@{wpm}", "label": label, "text": text, "heard": said})
    out: dict[str, Any] = {"sentences": len(rows)}
    for name, judge in judges(full).items():
        found = [judge(r["heard"]) for r in rows]
        harmful = [(r, f) for r, f in zip(rows, found, strict=True) if r["label"]]
        benign = [(r, f) for r, f in zip(rows, found, strict=True) if not r["label"]]
        out[name] = {
            "harmful_recall": round(sum(r["label"] in f for r, f in harmful) / len(harmful), 3),
            "benign_hit": sum(1 for _, f in benign if f),
            "missed": [f"{r['voice']}: {r['heard']}" for r, f in harmful if r["label"] not in f],
        }
    out["transcripts"] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one voice for the speech part")
    parser.add_argument("--heads", type=Path, default=None, help="another heads file")
    args = parser.parse_args()
    full = TextPolicy.load()
    if args.heads is not None:
        full = full.with_judge(TextJudge.load(args.heads))
    learned = full.judge
    assert learned is not None, "the shipped text policy has the judge on"
    result: dict[str, Any] = {
        "setting": {
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.system()}",
            "encoder": f"{learned.heads.meta.get('model')}, 1 thread, unpadded",
            "encoder_name": learned.encoder.name,
            "heads": str(args.heads or DEFAULT_HEADS),
            "asr": "whisper tiny.en int8 (faster-whisper), 2 threads",
            "voices": [f"{v}@{w}" for v, w in (VOICES[:1] if args.quick else VOICES)],
            "quick": args.quick,
        },
        "text": evaluate_text(full),
        "text_blind": evaluate_blind(full),
        "benign_pieces": evaluate_pieces(full, 10 if args.quick else 1),
        "benign_stream": evaluate_stream(full, args.heads, 120 if args.quick else 6),
        "speech": evaluate_speech(full, VOICES[:1] if args.quick else VOICES),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
