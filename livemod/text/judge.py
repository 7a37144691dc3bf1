"""The text policy: a lexicon and phrase patterns over transcripts and on-screen text.

Pure and shared by speech (ASR) and on-screen text (OCR). ``evaluate`` returns every
match with its category, score and character span in the *input* text, so callers
map hits back to words, media times or boxes.

Matching runs on a normalized copy of the text that undoes the usual evasions:
case, accents and width (casefold + NFKD, marks dropped), punctuation and symbols (separators),
leetspeak inside words (``k1ll``, ``h@te``), letters spaced or dotted apart
(``k i l l``, ``k.i.l.l``) and stretched letters (``kiiill``). Contact patterns
(phone numbers, URLs, handles) run on the raw text, where digits, dots and ``@``
still mean what they say. The lexicon ships in ``configs/text_policy.yaml``.

With ``judge:`` on (the shipped file), a learned judge (``livemod.text.learned``: MiniLM
sentence vectors, one small head per category) also scores every sentence, so a threat
phrased in words no list holds is still caught. A judge hit spans its sentence (a long one
from near the words that carry it) and is left out where a list or pattern hit of the same
category at least as strong covers it.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from livemod.errors import ConfigError
from livemod.paths import CONFIGS_DIR
from livemod.text.learned import DEFAULT_HEADS, TERM, TextJudge

DEFAULT_TEXT_POLICY = CONFIGS_DIR / "text_policy.yaml"

_LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Three or more single letters in a row, split by separators: "k i l l", "k.i.l.l".
_SPACED = re.compile(r"(?<![a-z0-9])[a-z](?:[ ][a-z](?![a-z0-9])){2,}")
JUDGE_MIN_WORDS = 2
"""The learned judge reads English sentences (MiniLM heads trained on the project's English
set): a sentence with fewer words of two or more Latin letters has no context to judge and is
left to the lexicon and patterns. On a cartoon frame OCR read a space shuttle's outline as
"人" ("person"), and the hate head, which keys on nouns for groups of people, scored it 0.76."""
_LATIN_WORD = re.compile(r"[a-z]{2,}")


@dataclass(frozen=True, slots=True)
class TextHit:
    """One policy match in a piece of text."""

    category: str
    """threat/violence -> ``violence``, ``self_harm``, ``hate``, ``sexual``,
    ``harassment``, ``contact`` (phone numbers, URLs, handles)."""
    score: float
    """0..1, from the lexicon entry or pattern."""
    term: str
    """The matched lexicon entry or pattern name."""
    start: int
    """Character span in the input text."""
    end: int


@dataclass(frozen=True, slots=True)
class _Rule:
    category: str
    score: float
    term: str
    regex: re.Pattern[str]
    on: Literal["normalized", "raw"]


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalized text and, per character, the input index it came from."""

    text: str
    origin: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The input span behind ``text[start:end]``."""
        return self.origin[start], self.origin[end - 1] + 1


def normalize(text: str) -> Normalized:
    """Undo case, punctuation, leetspeak and spacing tricks (see the module doc)."""
    chars: list[str] = []
    origin: list[int] = []
    for i, raw in enumerate(text):
        for ch in unicodedata.normalize("NFKD", raw.casefold()):
            if unicodedata.combining(ch):
                continue
            chars.append(ch)
            origin.append(i)
    # Leetspeak only inside words that also have letters: "k1ll" -> "kill",
    # while "call 555 1234" keeps its digits.
    out: list[str] = []
    keep: list[int] = []
    n = len(chars)
    i = 0
    while i < n:
        j = i
        while j < n and not chars[j].isspace():
            j += 1
        token = chars[i:j]
        leet = any(c.isalpha() for c in token)
        for k in range(i, j):
            c = chars[k]
            if leet and c in _LEET and (c.isdigit() or _inside(chars, k, i, j)):
                c = _LEET[c]
            out.append(c if c.isalnum() else " ")
            keep.append(origin[k])
        if j < n:
            out.append(" ")
            keep.append(origin[j])
        i = j + 1
    squeezed, idx = _squeeze_spaces("".join(out), keep)
    return _join_spaced(squeezed, idx)


def _inside(chars: list[str], k: int, lo: int, hi: int) -> bool:
    """A symbol counts as a letter only between two word characters ("h@te", not "hi!")."""
    return lo < k < hi - 1 and chars[k - 1].isalnum() and chars[k + 1].isalnum()


def _squeeze_spaces(text: str, origin: list[int]) -> tuple[str, list[int]]:
    chars: list[str] = []
    idx: list[int] = []
    for ch, o in zip(text, origin, strict=True):
        if ch == " " and (not chars or chars[-1] == " "):
            continue
        chars.append(ch)
        idx.append(o)
    if chars and chars[-1] == " ":
        chars.pop()
        idx.pop()
    return "".join(chars), idx


def _join_spaced(text: str, origin: list[int]) -> Normalized:
    chars: list[str] = []
    idx: list[int] = []
    pos = 0
    for m in _SPACED.finditer(text):
        chars.extend(text[pos : m.start()])
        idx.extend(origin[pos : m.start()])
        for k in range(m.start(), m.end()):
            if text[k] != " ":
                chars.append(text[k])
                idx.append(origin[k])
        pos = m.end()
    chars.extend(text[pos:])
    idx.extend(origin[pos:])
    return Normalized("".join(chars), tuple(idx))


def _term_regex(term: str) -> str:
    """A lexicon term as a regex: words split by any spacing, letters may repeat."""
    words = normalize(term).text.split(" ")
    parts = []
    for word in words:
        runs = [m.group(0) for m in re.finditer(r"(.)\1*", word)]
        parts.append("".join(f"{re.escape(r[0])}{{{len(r)},}}" for r in runs))
    return r"(?<![a-z0-9])" + " ".join(parts) + r"(?![a-z0-9])"


class TextPolicy:
    """Evaluates text against the lexicon, patterns and judge. Immutable and thread-safe."""

    def __init__(self, rules: list[_Rule], judge: TextJudge | None = None) -> None:
        self._rules = tuple(rules)
        self.judge = judge
        """The learned judge, when the policy file turns it on."""

    @property
    def categories(self) -> frozenset[str]:
        judged = self.judge.categories if self.judge is not None else frozenset()
        return frozenset(r.category for r in self._rules) | judged

    def without_judge(self) -> TextPolicy:
        """The same lists and patterns with the judge off (evaluation, comparisons)."""
        return self.with_judge(None)

    def with_judge(self, judge: TextJudge | None) -> TextPolicy:
        """The same lists and patterns with another judge (evaluation, comparisons)."""
        return TextPolicy(list(self._rules), judge)

    @classmethod
    def load(cls, path: Path | None = None) -> TextPolicy:
        """Read a text policy file (default ``configs/text_policy.yaml``)."""
        path = path or DEFAULT_TEXT_POLICY
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"text policy: cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"text policy: {path} is not valid YAML: {exc}") from exc
        return cls.parse(data, path.parent)

    @classmethod
    def parse(cls, data: Any, base: Path | None = None) -> TextPolicy:
        """Build a policy from the YAML structure; ConfigError names a bad entry.
        ``base``: where a relative ``judge.heads`` path starts (the policy file's folder)."""
        if not isinstance(data, dict) or {str(k) for k in data} - {
            "lexicon",
            "patterns",
            "judge",
        }:
            raise ConfigError(
                "text policy: expected a mapping with 'lexicon', 'patterns' and 'judge'"
            )
        rules: list[_Rule] = []
        lexicon = data.get("lexicon") or {}
        if not isinstance(lexicon, dict):
            raise ConfigError("text policy lexicon: expected a mapping of category -> entries")
        for category, entries in lexicon.items():
            rules.extend(_lexicon_rules(str(category), entries))
        patterns = data.get("patterns") or []
        if not isinstance(patterns, list):
            raise ConfigError("text policy patterns: expected a list")
        for i, raw in enumerate(patterns):
            rules.append(_pattern_rule(i, raw))
        return cls(rules, _judge(data.get("judge"), base))

    def evaluate(self, text: str) -> list[TextHit]:
        """Every match in ``text``, ordered by position then by score (highest first)."""
        if not text.strip():
            return []
        norm = normalize(text)
        hits: set[TextHit] = set()
        for rule in self._rules:
            subject = norm.text if rule.on == "normalized" else text
            for m in rule.regex.finditer(subject):
                if m.end() <= m.start():
                    continue
                start, end = norm.span(m.start(), m.end()) if rule.on == "normalized" else m.span()
                hits.add(TextHit(rule.category, rule.score, rule.term, start, end))
        if self.judge is not None:
            for j in self.judge.judge(text):
                if not judgeable(text[j.start : j.end]):
                    continue
                covered = any(
                    h.category == j.category
                    and h.score >= j.score
                    and h.start < j.end
                    and j.start < h.end
                    for h in hits
                )
                if not covered:
                    hits.add(TextHit(j.category, j.score, TERM, j.start, j.end))
        return sorted(hits, key=lambda h: (h.start, -h.score, h.end, h.term))


def judgeable(sentence: str) -> bool:
    """Whether the learned judge may score ``sentence`` (see ``JUDGE_MIN_WORDS``)."""
    return len(_LATIN_WORD.findall(normalize(sentence).text)) >= JUDGE_MIN_WORDS


_JUDGES: dict[Path, TextJudge] = {}
_JUDGES_LOCK = threading.Lock()


def _judge(raw: Any, base: Path | None) -> TextJudge | None:
    """``judge: off`` (or absent), ``judge: on``, or ``judge: {heads: PATH}``."""
    if raw is None or raw is False or raw == "off":
        return None
    heads: Any = "default"
    if isinstance(raw, dict):
        unknown = {str(k) for k in raw} - {"heads"}
        if unknown:
            raise ConfigError(f"text policy judge: unknown field(s) {', '.join(sorted(unknown))}")
        heads = raw.get("heads", "default")
    elif raw is not True and raw != "on":
        raise ConfigError(f"text policy judge: expected on, off or {{heads: PATH}}, got {raw!r}")
    if not isinstance(heads, str) or not heads:
        raise ConfigError("text policy judge.heads: expected 'default' or a path")
    path = DEFAULT_HEADS if heads == "default" else Path(heads)
    if not path.is_absolute() and base is not None:
        path = base / path
    # The speech and OCR stages load the policy separately: share one encoder session.
    with _JUDGES_LOCK:
        judge = _JUDGES.get(path.resolve())
        if judge is None:
            judge = _JUDGES[path.resolve()] = TextJudge.load(path)
    return judge


def _category_name(where: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: category {name!r} must be lower-case letters, digits, '_'")
    return name


def _score(where: str, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 <= raw <= 1.0:
        raise ConfigError(f"{where}: score must be a number from 0 to 1, got {raw!r}")
    return float(raw)


def _lexicon_rules(category: str, entries: Any) -> list[_Rule]:
    where = f"text policy lexicon.{category}"
    _category_name(where, category)
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list of terms")
    rules = []
    for i, entry in enumerate(entries):
        at = f"{where}[{i}]"
        if isinstance(entry, str):
            entry = {"term": entry}
        if not isinstance(entry, dict) or {str(k) for k in entry} - {"term", "score"}:
            raise ConfigError(f"{at}: expected a term or {{term, score}}, got {entry!r}")
        term = entry.get("term")
        if not isinstance(term, str) or not normalize(term).text:
            raise ConfigError(f"{at}: term must be a non-empty string, got {term!r}")
        score = _score(f"{at} ({term})", entry.get("score", 0.8))
        rules.append(_Rule(category, score, term, re.compile(_term_regex(term)), "normalized"))
    return rules


def _pattern_rule(i: int, raw: Any) -> _Rule:
    at = f"text policy patterns[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{at}: expected a mapping with name, category, score, regex")
    unknown = {str(k) for k in raw} - {"name", "category", "score", "regex", "match"}
    if unknown:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        hint = " (a bare 'on' reads as true in YAML; the key is 'match')" if True in raw else ""
        raise ConfigError(f"{at}: unknown field(s) {', '.join(sorted(unknown))}{hint}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{at}: name must be a non-empty string")
    at = f"text policy patterns[{i}] ({name})"
    category = _category_name(at, str(raw.get("category", "")))
    score = _score(at, raw.get("score"))
    on = raw.get("match", "normalized")
    if on not in ("normalized", "raw"):
        raise ConfigError(f"{at}: match must be 'normalized' or 'raw', got {on!r}")
    source = raw.get("regex")
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{at}: regex must be a non-empty string")
    try:
        # Raw text keeps its case; normalized text is already case-folded.
        regex = re.compile(source, re.IGNORECASE if on == "raw" else 0)
    except re.error as exc:
        raise ConfigError(f"{at}: invalid regex: {exc}") from exc
    return _Rule(category, score, name, regex, on)
