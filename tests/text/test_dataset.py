"""The labelled set's pure helpers: the pieces a transcript shows the judge, and which
pieces of benign lines the heads may learn as benign."""

from __future__ import annotations

from livemod.text.dataset import Example, benign_fragments, charged_words, pieces


def test_pieces_are_first_and_last_words_of_two_or_more() -> None:
    got = pieces("I want to die of embarrassment")
    assert "I want" in got and "of embarrassment" in got
    assert "I want to die of" in got and "want to die of embarrassment" in got
    assert "I want to die of embarrassment" not in got  # the line itself is not a piece
    assert all(len(p.split()) >= 2 for p in got)
    assert len(got) == len(set(got))


def test_a_benign_piece_holding_a_charged_word_is_not_taught_as_benign() -> None:
    said = ("I want to die", "I wish I could die", "just let me die")
    harmful = [Example(t, "self_harm") for t in said]
    benign = [
        Example(t, "benign_chat")
        for t in (
            "I want to die of embarrassment",
            "we want to go to the beach",
            "the movie made me want to cry",
            "let me know when you get home",
            "I could eat a whole pizza",
            "the beach was just lovely today",
        )
    ]
    charged = charged_words([*harmful, *benign])
    assert "die" in charged  # in every harmful line, in one benign line of six
    assert "want" not in charged  # as common in the benign lines
    fragments = benign_fragments([*harmful, *benign], charged)
    assert "I want to die" not in fragments
    assert "of embarrassment" in fragments
    assert fragments["we want to go"].text == "we want to go to the beach"
    assert not any(e.label == "self_harm" for e in fragments.values())  # benign lines only
