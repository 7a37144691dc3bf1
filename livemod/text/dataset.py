"""The text judge's labelled set (``data/text_judge/labelled.txt``) and its fixed split.

One sentence a line under a ``[label]`` header; ``#`` starts a comment line. Labels are
the policy categories the judge scores and hard negatives (``benign_<topic>``). A line is
held back from training when its sha256 says so, so the split never depends on the order
of the file and a sentence added later lands on one side for good.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from livemod.errors import ConfigError
from livemod.paths import REPO_ROOT

LABELLED_SET = REPO_ROOT / "data" / "text_judge" / "labelled.txt"
CORRECTIONS_SET = REPO_ROOT / "data" / "text_judge" / "corrections.txt"
"""Sentences the judge got wrong in use, labelled like the labelled set and split the same
way: the heads learn its training lines (``CORRECTION_WEIGHT`` times a labelled line), the
fine-tuned encoder never sees it, so a correction needs the heads retrained, not the encoder."""
CORRECTION_WEIGHT = 3.0
"""A correction's weight in the heads' fit against a labelled line's 1. At 1 the heads that
learned make demo's sign-offs still scored "See you tomorrow." 0.96, a hundredth under the
violence threshold; at 3, 0.90 (docs/speech.md)."""
SIGNOFFS_SET = REPO_ROOT / "data" / "text_judge" / "signoffs.txt"
"""Evaluation only: sign-offs and greetings in neither training file (the judge muted make
demo's "See you tomorrow."; ``benchmarks/text_policy.py``)."""
BLIND_SET = REPO_ROOT / "data" / "text_judge" / "blind.txt"
"""Evaluation only, every line: sentences written from the category definitions alone by
writers who never opened the labelled set, so they test the judge on phrasings its
authors did not choose (``benchmarks/text_policy.py``); never trained on."""
CATEGORIES = ("violence", "harassment", "hate", "self_harm", "sexual", "contact")
"""The categories the judge scores, in the order of the heads."""
NEGATIVE_PREFIX = "benign_"
HELD_BACK_ONE_IN = 4
"""About a quarter of the lines are held back for evaluation and never trained on."""
CALIBRATION_ONE_IN = 5
"""About a fifth of the training lines form the calibration slice: the fine-tuned encoder
never sees them (``scripts/finetune_text_encoder.py``), so the heads' thresholds are picked
on scores of lines neither the encoder nor the heads were fitted on."""
_HEADER = re.compile(r"^\[([a-z][a-z0-9_]*)\]$")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str

    def _digest(self) -> bytes:
        return hashlib.sha256(self.text.encode("utf-8")).digest()

    @staticmethod
    def _held_back(digest: bytes) -> bool:
        return int.from_bytes(digest[:4], "big") % HELD_BACK_ONE_IN == 0

    @property
    def held_back(self) -> bool:
        return self._held_back(self._digest())

    @property
    def calibration(self) -> bool:
        """In the training split's calibration slice (by another byte of the sha256)."""
        digest = self._digest()
        return not self._held_back(digest) and digest[5] % CALIBRATION_ONE_IN == 0

    @property
    def negative(self) -> bool:
        return self.label.startswith(NEGATIVE_PREFIX)


@dataclass(frozen=True, slots=True)
class LabelledSet:
    examples: tuple[Example, ...]
    sha256: str
    """Of the file's bytes: the heads record which data they came from."""

    def split(self, held_back: bool) -> list[Example]:
        return [e for e in self.examples if e.held_back == held_back]


def load_labelled(path: Path = LABELLED_SET) -> LabelledSet:
    raw = path.read_bytes()
    examples: list[Example] = []
    label: str | None = None
    seen: set[str] = set()
    for n, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        header = _HEADER.match(line)
        if header:
            label = header.group(1)
            if label not in CATEGORIES and not label.startswith(NEGATIVE_PREFIX):
                raise ConfigError(f"{path}:{n}: unknown label {label!r}")
            continue
        if label is None:
            raise ConfigError(f"{path}:{n}: a sentence before the first [label]")
        if line.casefold() in seen:
            raise ConfigError(f"{path}:{n}: duplicate sentence {line!r}")
        seen.add(line.casefold())
        examples.append(Example(line, label))
    return LabelledSet(tuple(examples), hashlib.sha256(raw).hexdigest())


PIECE_MIN_WORDS = 2


def pieces(text: str) -> list[str]:
    """The first and the last ``PIECE_MIN_WORDS`` .. n-1 words of ``text``, each once: the
    pieces of a sentence a transcript shows the judge (Whisper commits a sentence word by
    word, and a window may end it with a stop, so its last words start a sentence too)."""
    words = text.split()
    out: dict[str, None] = {}
    for k in range(PIECE_MIN_WORDS, len(words)):
        out[" ".join(words[:k]).rstrip(",;:")] = None
        out[" ".join(words[-k:])] = None
    return list(out)


CHARGED_MIN_LINES = 3
CHARGED_RATIO = 2.0
"""A word is charged when at least ``CHARGED_MIN_LINES`` harmful training lines hold it, in
a share at least ``CHARGED_RATIO`` times its (add-one) share of the benign lines: a benign
line's piece holding one ("I want to die" of "I want to die of embarrassment") may carry the
harm its line's other words deny, so it is not taught as benign."""
_TOKEN = re.compile(r"[a-z']+")


def charged_words(examples: list[Example]) -> frozenset[str]:
    """Words typical of the harmful lines (``CHARGED_RATIO``)."""
    harmful: Counter[str] = Counter()
    benign: Counter[str] = Counter()
    for e in examples:
        (benign if e.negative else harmful).update(set(_TOKEN.findall(e.text.lower())))
    n_harmful = max(sum(1 for e in examples if not e.negative), 1)
    n_benign = max(sum(1 for e in examples if e.negative), 1)
    return frozenset(
        w
        for w, c in harmful.items()
        if c >= CHARGED_MIN_LINES and c / n_harmful >= CHARGED_RATIO * (benign[w] + 1) / n_benign
    )


def benign_fragments(lines: list[Example], charged: frozenset[str]) -> dict[str, Example]:
    """The fragments of the benign ``lines`` that hold no charged word, each once, with the
    line it came from."""
    out: dict[str, Example] = {}
    for e in lines:
        if e.negative:
            for f in pieces(e.text):
                if f not in out and not charged & set(_TOKEN.findall(f.lower())):
                    out[f] = e
    return out
