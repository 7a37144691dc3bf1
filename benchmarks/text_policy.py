"""The text judge against the word list: precision and recall per category.

1. Text: the held-back part of ``data/text_judge/labelled.txt`` (never trained on; the split
   is fixed by each line's sha256), and every line of ``data/text_judge/blind.txt``
   (evaluation only, written by writers who never saw the labelled set; ``text_blind``).
   A line counts as flagged for a category when any hit of that category falls in it.
   Three judges: the shipped word list and patterns alone (``list``), the learned heads
   alone (``judge``), both (``both``, what the daemon runs).
   Hard negatives (gaming, sports, cooking, news, quotes, chat) must get no hit at all.
2. Speech: sentences spoken by espeak-ng with several voices and speeds, transcribed by
   livemod's Whisper engine (tiny.en int8, one call per sentence), then judged as above:
   recall on the spoken threats and hits on the spoken hard negatives.

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

from livemod.text.dataset import BLIND_SET, CATEGORIES, Example, load_labelled
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
    return {
        "held_back_lines": len(held),
        "held_back_hard_negatives": sum(1 for e in held if e.negative),
        "labelled_set_lines": len(data.examples),
        "labelled_set_sha256": data.sha256,
        **judge_lines(full, held),
    }


def evaluate_blind(full: TextPolicy) -> dict[str, Any]:
    blind = load_labelled(BLIND_SET)
    return {
        "lines": len(blind.examples),
        "hard_negatives": sum(1 for e in blind.examples if e.negative),
        "sha256": blind.sha256,
        **judge_lines(full, blind.examples),
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
        "speech": evaluate_speech(full, VOICES[:1] if args.quick else VOICES),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
