"""The text policy benchmark's quick mode: per-category precision/recall for the list, the
judge and both on the held-back set, and spoken sentences through Whisper."""

from __future__ import annotations

from livemod.text.dataset import CATEGORIES
from tests.bench.test_benchmarks import run_quick


def test_text_policy_quick() -> None:
    out = run_quick("text_policy", 240)
    assert out["setting"]["quick"] is True
    text = out["text"]
    assert text["held_back_lines"] > 100 and len(text["labelled_set_sha256"]) == 64
    for name in ("list", "judge", "both"):
        per = text[name]["per_category"]
        assert set(per) == set(CATEGORIES)
        for row in per.values():
            for key in ("precision", "recall"):
                assert row[key] is None or 0.0 <= row[key] <= 1.0
        assert isinstance(text[name]["hard_negative_lines_hit"], int)
    # The judge adds what the list cannot see: more recall on the held-back threats.
    assert (
        text["both"]["per_category"]["violence"]["recall"]
        > (text["list"]["per_category"]["violence"]["recall"])
    )
    # Corrections' and sign-offs' evaluation lines are reported apart.
    assert text["corrections"]["held_back_lines"] > 10
    assert isinstance(text["corrections"]["judge"]["hard_negative_lines_hit"], int)
    assert isinstance(text["signoffs"]["judge"]["hard_negative_lines_hit"], int)
    blind = out["text_blind"]
    assert blind["lines"] > 1000 and blind["hard_negatives"] > 300
    assert set(blind["judge"]["per_category"]) == set(CATEGORIES)
    speech = out["speech"]
    assert speech["sentences"] == len(speech["transcripts"]) > 0
    assert 0.0 <= speech["both"]["harmful_recall"] <= 1.0
    pieces = out["benign_pieces"]
    for name in ("held_back", "blind"):
        row = pieces[name]
        assert row["hard_negative_lines"] > 10 and row["pieces"] > row["hard_negative_lines"]
        assert 0 <= row["pieces_hit"] <= row["pieces"]
        assert row["lines_with_a_piece_hit"] <= row["hard_negative_lines"]
    stream = out["benign_stream"]
    assert stream["lines"] > 5 and stream["words_heard"] > 0
    assert stream["mutes"] == len(stream["mute_events"])
