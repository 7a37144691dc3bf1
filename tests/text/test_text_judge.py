"""The learned text judge: its committed heads, what it catches, what it leaves alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livemod.app import demo
from livemod.errors import ConfigError
from livemod.paths import REPO_ROOT
from livemod.testing import speech as ts
from livemod.text.dataset import (
    BLIND_SET,
    CATEGORIES,
    CORRECTIONS_SET,
    SIGNOFFS_SET,
    load_labelled,
)
from livemod.text.encoder import (
    JUDGE_MODEL_PATH,
    JUDGE_MODEL_SHA256,
    MODEL_SHA256,
    TOKENIZER_PATH,
    TOKENIZER_SHA256,
    sha256_file,
)
from livemod.text.judge import TextPolicy
from livemod.text.learned import DEFAULT_HEADS, TERM, Heads, TextJudge, segments
from tests.conftest import TIMEOUT_SCALE


@pytest.fixture(scope="module")
def policy() -> TextPolicy:
    return TextPolicy.load()


def categories(policy: TextPolicy, text: str) -> set[str]:
    return {h.category for h in policy.evaluate(text)}


def test_committed_heads_are_what_the_script_trains(tmp_path: Path) -> None:
    out = tmp_path / "heads.json"
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "train_text_judge.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300 * TIMEOUT_SCALE,
    )
    fresh = json.loads(out.read_text())
    committed = json.loads(DEFAULT_HEADS.read_text())
    # The heads came from the labelled set as it is now, and from these model files.
    assert committed["data_sha256"] == load_labelled().sha256 == fresh["data_sha256"]
    corrections = load_labelled(CORRECTIONS_SET).sha256
    assert committed["corrections_sha256"] == corrections == fresh["corrections_sha256"]
    assert committed["encoder"] == "judge" == fresh["encoder"]
    assert committed["model_sha256"] == JUDGE_MODEL_SHA256 == fresh["model_sha256"]
    assert committed["tokenizer_sha256"] == TOKENIZER_SHA256 == sha256_file(TOKENIZER_PATH)
    assert list(committed["heads"]) == list(fresh["heads"]) == list(CATEGORIES)
    for category in CATEGORIES:
        a, b = committed["heads"][category], fresh["heads"][category]
        # Newton's method has no randomness; the tolerance only absorbs float rounding
        # that differs between CPUs' SIMD paths.
        assert a["threshold"] == pytest.approx(b["threshold"], abs=2e-3), category
        assert a["bias"] == pytest.approx(b["bias"], abs=1e-3), category
        np.testing.assert_allclose(a["weights"], b["weights"], atol=1e-3)


def test_committed_encoder_is_the_fine_tuned_one_for_this_data() -> None:
    # scripts/finetune_text_encoder.py wrote the file and its record; it was fine-tuned on
    # the labelled set as it is now (re-run the script, then train_text_judge.py, after an
    # edit). The record is the script's own account of what it trained on.
    record = json.loads(JUDGE_MODEL_PATH.with_suffix(".json").read_text())
    assert sha256_file(JUDGE_MODEL_PATH) == JUDGE_MODEL_SHA256 == record["sha256"]
    data = load_labelled()
    assert record["data_sha256"] == data.sha256
    assert record["fine_tuned_on"] == sum(
        1 for e in data.split(held_back=False) if not e.calibration
    )
    assert record["held_back"] == len(data.split(held_back=True))


def test_heads_choose_their_encoder(tmp_path: Path) -> None:
    heads = json.loads(DEFAULT_HEADS.read_text())
    (tmp_path / "base.json").write_text(json.dumps({**heads, "encoder": "base"}))
    judge = TextJudge.load(tmp_path / "base.json")
    assert judge.encoder.name == "base" and judge.encoder.sha256 == MODEL_SHA256
    assert TextJudge.load(DEFAULT_HEADS).encoder.sha256 == JUDGE_MODEL_SHA256
    (tmp_path / "odd.json").write_text(json.dumps({**heads, "encoder": "odd"}))
    with pytest.raises(ConfigError, match="unknown encoder 'odd'"):
        TextJudge.load(tmp_path / "odd.json")


@pytest.mark.parametrize(
    "text",
    [
        # The phrasing family: no listed verb, no "I will ... you" pattern.
        "I know your address, and I am coming over tonight with a knife.",
        "We found out where you live and we are coming for you tonight.",
    ],
)
def test_threats_without_listed_words_are_violence(policy: TextPolicy, text: str) -> None:
    assert policy.without_judge().evaluate(text) == []
    hits = [h for h in policy.evaluate(text) if h.category == "violence"]
    assert hits and all(h.term == TERM for h in hits), policy.evaluate(text)
    (hit,) = hits
    # A judge hit spans its sentence and lands in the medium tier, never the high one.
    assert text[hit.start : hit.end].rstrip(".") == text.rstrip(".")
    assert 0.7 <= hit.score <= 0.9


# Whisper (tiny.en) on the speech tests' espeak-ng sentences, as the clean-clone suite and
# reruns of tests/app/test_scan_speech.py saw them: misheard, run together, cut at a window.
WHISPER_EVERYDAY = (
    "But whether today is sunny and warm Please open the window before dinner.",
    "My brother plays nuggetar every evening We walked along the river to",
    "We walked along the river to the old bridge The Kill -Rideing books in the library.",
    "The Kill -Rideing books in the library turn left at the second traffic light",
    "turn left at the second traffic light She won't fresh rent at the market The train",
    "The train to the city leave that room Our neighbors",
    "Our neighbors plan to draw this in the garden He fixed the old clock on the kitchen wall.",
)


def test_pieces_of_everyday_speech_stay_clean(policy: TextPolicy) -> None:
    # The reader judges a sentence as Whisper commits it, from its first word (a window's
    # stop may cut a sentence, so the everyday sentences' last words start one too).
    # Heads trained on whole lines alone flagged "the second traffic light" (violence
    # 0.99) and, on the CI machine, a piece of "Turn left at the second traffic light." as
    # sexual, muting a benign stream.
    pieces: set[str] = set()
    for sentence in (*ts.EVERYDAY, *WHISPER_EVERYDAY):
        words = sentence.split()
        for k in range(1, len(words) + 1):
            pieces.add(" ".join(words[:k]))
            if sentence in ts.EVERYDAY:
                pieces.add(" ".join(words[-k:]))
    flagged = {p: policy.evaluate(p) for p in sorted(pieces) if policy.evaluate(p)}
    assert not flagged, flagged


def test_the_demo_talk_and_its_pieces_stay_clean(policy: TextPolicy) -> None:
    # make demo ended with a false mute: Whisper split "Thanks for watching, see you
    # tomorrow." and the violence head flagged "See you tomorrow." (0.97) alone.
    benign = [text for _, text in demo.TALK if text != ts.THREAT]
    pieces = {p.strip(" ,.").capitalize() + "." for text in benign for p in text.split(",")}
    flagged = {t: policy.evaluate(t) for t in sorted({*benign, *pieces}) if policy.evaluate(t)}
    assert not flagged, flagged


@pytest.mark.parametrize(
    "text",
    [
        "I killed the boss.",
        "We destroyed them.",
        "I killed the boss on my first try, we destroyed them in the last round.",
        "Headshot! Knife him from behind and push B.",
        "Cut the onions and beat the eggs.",
        "The striker shot from the halfway line and scored.",
        "Police arrested a man after a stabbing downtown.",
        "My sister is coming over tonight with a cake.",
        "The weather today is sunny and warm.",
        # Group nouns alone or in benign sentences (the hate head used to flag these).
        "The people.",
        "Jewish community.",
        "People of China.",
        "The people of China and Japan share many festivals.",
        "The Jewish community centre has a new gym.",
        "Immigrants opened three bakeries on our street.",
    ],
)
def test_gaming_and_other_hard_negatives_stay_clean(policy: TextPolicy, text: str) -> None:
    assert policy.evaluate(text) == []


def test_one_sentence_is_judged_on_its_own(policy: TextPolicy) -> None:
    threat = "I know where you live and I am coming for you tonight with a knife."
    text = f"Welcome back everyone. We played a lot today. {threat} Anyway, thanks for watching."
    hits = [h for h in policy.evaluate(text) if h.category == "violence"]
    assert [text[h.start : h.end] for h in hits] == [threat]


def test_a_run_on_sentence_is_flagged_from_near_the_threat(policy: TextPolicy) -> None:
    # Whisper runs sentences together; the mute starts where the hit's span starts, so
    # the span starts near the threat, not with the everyday words before it.
    before = "the weather today is sunny and"
    threat = "I'll torch your car with you inside"
    text = f"{before} warm {threat.lower()}"
    hits = [h for h in policy.evaluate(text) if h.category == "violence"]
    assert [h.term for h in hits] == [TERM]
    # The span starts a word or two before the threat (the best-scoring suffix, less one
    # word: with the heads of 2026-11-27 "warm i'll torch ..." outscores the threat alone).
    span = text[hits[0].start :]
    assert span.endswith(threat.lower())
    assert 1 <= len(span.split()) - len(threat.split()) <= 2, span
    # A sentence shorter than NARROW_FROM_WORDS keeps its whole span.
    short = "I know your address, see you tonight."
    assert all(h.start == 0 for h in policy.evaluate(short))


def test_a_list_hit_covers_the_judge_in_its_category(policy: TextPolicy) -> None:
    hits = policy.evaluate("I will kill you tonight.")
    assert [(h.category, h.term) for h in hits] == [("violence", "threat_intent")]


# Held-back hard negatives of these topics the shipped judge flags (the target is
# none; docs/speech.md): a new one fails the test below, and one that stops being flagged
# must leave this list.
KNOWN_FALSE_HITS = {"ok im gonna snipe anyone who peeks that window"}


def test_no_held_back_hard_negative_topic_is_flagged_by_the_judge(policy: TextPolicy) -> None:
    # The hard negatives and benign sentences naming groups. benign_chat and
    # benign_health hold deliberate near-misses (recovery talk, "I know where you live,
    # you're my neighbour"), reported by benchmarks/text_policy.py.
    topics = {
        "benign_gaming",
        "benign_sports",
        "benign_cooking",
        "benign_news",
        "benign_quotes",
        "benign_lyrics",
        "benign_groups",
    }
    judge = policy.judge
    assert judge is not None
    held = [e for e in load_labelled().split(held_back=True) if e.label in topics]
    assert len(held) > 40
    assert {e.text for e in held if judge.judge(e.text)} == KNOWN_FALSE_HITS


def test_segments_split_sentences_and_lines() -> None:
    text = "Hello there. I will find you! ok?\nline two\n\n..."
    assert [text[a:b] for a, b in segments(text)] == [
        "Hello there.",
        "I will find you!",
        "ok?",
        "line two",
    ]
    long = " ".join(f"w{i}" for i in range(90))
    windows = [long[a:b].split() for a, b in segments(long)]
    assert windows[0][0] == "w0" and windows[-1][-1] == "w89"
    assert all(len(w) <= 40 for w in windows)


@pytest.mark.parametrize(
    ("judge", "on"),
    [
        ("judge: off\n", False),
        ("", False),
        ("judge: on\n", True),
        ("judge: {heads: default}\n", True),
    ],
)
def test_the_judge_is_switched_in_the_policy_file(tmp_path: Path, judge: str, on: bool) -> None:
    path = tmp_path / "tp.yaml"
    path.write_text("lexicon:\n  hate: [badword]\n" + judge)
    policy = TextPolicy.load(path)
    assert (policy.judge is not None) == on
    assert categories(policy, "I know your address and I'm coming over tonight with a knife") == (
        {"violence"} if on else set()
    )


def test_heads_path_is_relative_to_the_policy_file(tmp_path: Path) -> None:
    (tmp_path / "h.json").write_text(DEFAULT_HEADS.read_text())
    path = tmp_path / "tp.yaml"
    path.write_text("judge: {heads: h.json}\n")
    judge = TextPolicy.load(path).judge
    assert judge is not None and judge.heads.categories == CATEGORIES


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("judge: maybe\n", "expected on, off"),
        ("judge: {model: x}\n", "unknown field(s) model"),
        ("judge: {heads: nope.json}\n", "cannot read heads"),
        ("judge: {heads: bad.json}\n", "no heads"),
        ("judge: {heads: short.json}\n", "needs 384 weights"),
    ],
)
def test_bad_judge_settings_are_named(tmp_path: Path, text: str, needle: str) -> None:
    (tmp_path / "bad.json").write_text('{"heads": {}}')
    (tmp_path / "short.json").write_text(
        '{"heads": {"hate": {"weights": [1, 2], "bias": 0, "threshold": 0.5}}}'
    )
    path = tmp_path / "tp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        TextPolicy.load(path)
    assert needle in str(err.value)


def test_heads_parse_rejects_a_bad_threshold() -> None:
    head = {"weights": [0.0] * 384, "bias": 0.0, "threshold": 1.5}
    with pytest.raises(ConfigError, match="threshold"):
        Heads.parse({"heads": {"hate": head}})


def test_the_blind_set_shares_no_sentence_with_the_training_files() -> None:
    # It is evaluation data only: a sentence of it in the labelled set would be trained on
    # (compared by its words: "SEE YOU TOMORROW" is "See you tomorrow.").
    def words(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", "", text.casefold()).split())

    labelled = {words(e.text) for e in load_labelled().examples}
    corrections = {words(e.text) for e in load_labelled(CORRECTIONS_SET).examples}
    blind = load_labelled(BLIND_SET)
    assert len(blind.examples) > 2000
    assert [e.text for e in blind.examples if words(e.text) in labelled | corrections] == []
    # A correction is a sentence the labelled set lacks; the sign-offs are in neither.
    assert labelled & corrections == set()
    signoffs = {words(e.text) for e in load_labelled(SIGNOFFS_SET).examples}
    assert signoffs and signoffs & (labelled | corrections) == set()
    assert {e.label for e in blind.examples} >= set(CATEGORIES)
