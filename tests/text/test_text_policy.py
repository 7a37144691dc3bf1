from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from livemod.errors import ConfigError
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.text.judge import TextHit, TextPolicy, normalize


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return TextPolicy.load()


def found(policy: TextPolicy, text: str) -> list[tuple[str, str, str]]:
    return [(h.category, h.term, text[h.start : h.end]) for h in policy.evaluate(text)]


def test_shipped_categories_exist_in_the_vote_policy(policy: TextPolicy) -> None:
    assert policy.categories == {
        "violence",
        "self_harm",
        "hate",
        "sexual",
        "harassment",
        "contact",
    }
    assert policy.categories <= set(load_policy(DEFAULT_POLICY).categories)


@pytest.mark.parametrize(
    "text",
    [
        "The weather today is sunny and warm.",
        "I killed him in the game, what a play",
        "Let us talk about the garden.",
        "hello! e.g. this, i.e. that",
        "in 2024 the score was 3-1",
        "the murderer in the novel was the butler",
        "",
        "   ",
    ],
)
def test_benign_text_has_no_hits(policy: TextPolicy, text: str) -> None:
    assert policy.evaluate(text) == []


@pytest.mark.parametrize(
    ("text", "category", "span"),
    [
        ("I will kill you tonight.", "violence", "I will kill you"),
        ("I'm going to hurt you.", "violence", "I'm going to hurt you"),
        ("We'll find you and shoot you", "violence", "We'll find you and shoot you"),
        ("you're dead", "violence", "you're dead"),
        ("I want to kill myself", "self_harm", "I want to kill myself"),
        ("all those people should die", "hate", "those people should die"),
        ("send nudes", "sexual", "send nudes"),
        ("you are such a loser", "harassment", "you are such a loser"),
    ],
)
def test_intent_and_lexicon(policy: TextPolicy, text: str, category: str, span: str) -> None:
    hits = found(policy, text)
    assert (category, span) in [(c, s) for c, _, s in hits], hits


@pytest.mark.parametrize(
    "text",
    [
        "kill yourself",
        "KILL YOURSELF",
        "k i l l yourself",
        "k.i.l.l yourself",
        "k1ll yourself",
        "kiiiill   yourself!!",
        "K-1-L-L yourself",
    ],
)
def test_evasions_are_normalized(policy: TextPolicy, text: str) -> None:
    hits = policy.evaluate(text)
    assert [(h.category, h.term) for h in hits] == [("harassment", "kill yourself")]
    (hit,) = hits
    # The span is in the caller's text, not the normalized copy.
    assert (hit.start, hit.end) == (0, len(text.rstrip("!")))


def test_word_boundaries(policy: TextPolicy) -> None:
    # The list's own word boundaries; the judge reads meaning, not words.
    lists = policy.without_judge()
    assert lists.evaluate("pornography lecture") == []
    assert lists.evaluate("skyscraper kystone") == []
    assert policy.evaluate("skyscraper kystone") == []
    assert found(policy, "lol kys") == [("harassment", "kys", "kys")]


@pytest.mark.parametrize(
    ("text", "term", "match"),
    [
        ("call me at +1 555-123-4567 ok", "phone_number", "+1 555-123-4567"),
        ("visit example.com/offer now", "url", "example.com/offer"),
        ("go to https://spam.example/x?y=1", "url", "https://spam.example/x?y=1"),
        ("dm @cool_guy99 later", "social_handle", "@cool_guy99"),
        ("write bob@mail.com", "email", "bob@mail.com"),
        ("snap: johnny22", "messenger_id", "snap: johnny22"),
        ("go to spam dot com", "spoken_url", "spam dot com"),
    ],
)
def test_contact_patterns(policy: TextPolicy, text: str, term: str, match: str) -> None:
    assert ("contact", term, match) in found(policy, text)


def test_hits_are_ordered_and_typed(policy: TextPolicy) -> None:
    text = "kys. I will kill you. call 555 123 4567"
    hits = policy.evaluate(text)
    assert all(isinstance(h, TextHit) and 0.0 <= h.score <= 1.0 for h in hits)
    assert [h.start for h in hits] == sorted(h.start for h in hits)
    assert {h.category for h in hits} == {"harassment", "violence", "contact"}


def test_normalize_keeps_an_index_map() -> None:
    norm = normalize("\uff28\u00e9llo,   W0rld!")
    assert norm.text == "hello world"
    assert len(norm.origin) == len(norm.text)
    assert norm.span(6, 11) == (9, 14)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tp.yaml"
    path.write_text(text)
    return path


def test_operator_lexicon_extends(tmp_path: Path) -> None:
    p = TextPolicy.load(
        write(tmp_path, "lexicon:\n  hate:\n    - badword\n    - {term: two words, score: 0.5}\n")
    )
    assert [(h.term, h.score) for h in p.evaluate("x B@DW0RD y two   words")] == [
        ("badword", 0.8),
        ("two words", 0.5),
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("lexicon: [a]\n", "lexicon: expected a mapping"),
        ("lexicon:\n  Hate!: [x]\n", "category 'Hate!'"),
        ("lexicon:\n  hate: x\n", "lexicon.hate: expected a list"),
        ("lexicon:\n  hate: [{term: x, score: 2}]\n", "lexicon.hate[0] (x): score"),
        ("lexicon:\n  hate: [{term: '!!'}]\n", "lexicon.hate[0]: term"),
        ("patterns:\n  - {name: p, category: hate, score: 0.5, regex: '('}\n", "(p): invalid"),
        ("patterns:\n  - {name: p, category: hate, score: 0.5}\n", "(p): regex"),
        (
            "patterns:\n  - {name: p, category: hate, score: 0.5, regex: x, on: raw}\n",
            "key is 'match'",
        ),
        ("patterns:\n  - {name: p, category: x, score: 0.5, regex: x, match: y}\n", "match"),
        ("words: []\n", "expected a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        TextPolicy.load(write(tmp_path, text))
    assert needle in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        TextPolicy.load(tmp_path / "nope.yaml")


def test_parse_accepts_structures() -> None:
    data: dict[str, Any] = {
        "patterns": [
            {"name": "n", "category": "contact", "score": 1, "regex": r"\d{3}", "match": "raw"}
        ]
    }
    assert [h.term for h in TextPolicy.parse(data).evaluate("abc 123")] == ["n"]
