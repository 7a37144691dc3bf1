"""Whisper over several streams' windows in one call: encode, decode and align as a batch.

Whisper pads every window to 30 s, so one window costs the same whatever its length,
and a GPU runs a batch of windows in little more time than one. faster-whisper's own
batched pipeline batches the chunks of *one* recording; here each item is a window of a
different stream, with its own media offset, prompt and hallucination-guard verdict,
and no state is carried from one item to the next (so an item's words do not depend on
what it was batched with).

The decode settings are the ones the single-window path (``WhisperEngine.transcribe``)
uses: greedy, temperature 0, timestamps on, the first timestamp within 1 s, blank and
non-speech tokens suppressed. Unlike that path there is no temperature fallback and no
second pass over a 30 s window's unfinished tail; livemod's windows are shorter than
30 s and the guard drops what a fallback would have retried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from livemod.messages import Samples
from livemod.speech.words import Decoded, GuardOptions, Word

# Whisper's punctuation that sticks to the next / previous word (full-width forms too).
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001
MAX_INITIAL_TIMESTAMP_S = 1.0
NO_SPEECH_SKIP = 0.6
"""A window likelier silence than this, decoded with ``avg_logprob`` below
``LOGPROB_SKIP``, yields nothing (faster-whisper's own skip rule)."""
LOGPROB_SKIP = -1.0
FRAMES_PER_S = 100
SAMPLE_RATE = 16000
MAX_TOKENS_BASE = 16
MAX_TOKENS_PER_S = 12
"""Sized windows: a decode stops after this many tokens (speech runs 3-5 a second)."""
OVERRUN_S = 0.5
SIZED_PAD_S = 1.0
"""Sized windows: silence after the audio (Whisper ends a segment on seeing some), then
rounded up to a whole second of features."""


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One stream's window: audio, its media start time and an optional text prompt."""

    audio: Samples
    offset_s: float
    prompt: str | None = None


class BatchDecoder:
    """Decodes windows of several streams together on one loaded ``WhisperModel``.

    Thread-safe as far as CTranslate2 is (calls run concurrently on its workers).
    """

    def __init__(
        self, model: Any, language: str | None, guard: GuardOptions, *, sized: bool = False
    ) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._model = model
        self._guard = guard
        self._sized = sized
        """Run the encoder on features sized to the audio instead of padded to 30 s."""
        self._multilingual = bool(model.model.is_multilingual)
        self._tokenizer = Tokenizer(
            model.hf_tokenizer, self._multilingual, task="transcribe", language=language or "en"
        )
        self._detect = language is None and self._multilingual
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]) or ())
        self._max_initial = round(MAX_INITIAL_TIMESTAMP_S / model.time_precision)

    def decode(self, items: Sequence[BatchItem]) -> list[Decoded]:
        """One ``Decoded`` per item, in order; an item of silence costs nothing."""
        started = time.perf_counter()
        out = [Decoded((), 0, 0.0) for _ in items]
        # CTranslate2 decodes a batch only when every prompt has the same length: one
        # call per length (windows without a prompt, the common case, share one call).
        groups: dict[int, list[tuple[int, list[int]]]] = {}
        for i, item in enumerate(items):
            if len(item.audio) and np.any(item.audio):
                prompt = self._prompt(item.prompt)
                groups.setdefault(len(prompt), []).append((i, prompt))
        for group in groups.values():
            decoded = self._run([items[i] for i, _ in group], [p for _, p in group])
            for (i, _), d in zip(group, decoded, strict=True):
                out[i] = d
        elapsed = time.perf_counter() - started
        # Each decoded item is charged the whole call: it waited for all of it.
        ran = {i for group in groups.values() for i, _ in group}
        return [Decoded(d.words, d.rejected, elapsed) if i in ran else d for i, d in enumerate(out)]

    def _run(self, items: Sequence[BatchItem], prompts: list[list[int]]) -> list[Decoded]:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio, get_ctranslate2_storage

        model, tok = self._model, self._tokenizer
        mels = [model.feature_extractor(item.audio)[..., :-1] for item in items]
        frames = [min(m.shape[-1], model.feature_extractor.nb_max_frames) for m in mels]
        if self._sized:
            # CTranslate2's Whisper encoder takes any length up to 30 s; its cost grows with
            # the length (measured: 36 ms for 6 s against 560 ms for the padded 30 s).
            need = max(frames) + round(SIZED_PAD_S * FRAMES_PER_S)
            size = min(
                -(-need // FRAMES_PER_S) * FRAMES_PER_S, model.feature_extractor.nb_max_frames
            )
            features = np.stack([_fit(m, size) for m in mels]).astype(np.float32)
        else:
            features = np.stack([pad_or_trim(m) for m in mels]).astype(np.float32)
        encoded = model.model.encode(get_ctranslate2_storage(features), to_cpu=False)
        if self._detect:
            position = prompts[0].index(tok.language)
            detected = model.model.detect_language(encoded)
            for prompt, langs in zip(prompts, detected, strict=True):
                prompt[position] = tok.tokenizer.token_to_id(langs[0][0])
        max_length = model.max_length
        if self._sized:
            longest = max(len(item.audio) for item in items) / SAMPLE_RATE
            max_length = min(max_length, MAX_TOKENS_BASE + round(MAX_TOKENS_PER_S * longest))
        results = model.model.generate(
            encoded,
            prompts,
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            max_initial_timestamp_index=self._max_initial,
        )
        texts: list[list[int]] = []
        stats: list[tuple[float, float, float]] = []
        for item, result in zip(items, results, strict=True):
            tokens = list(result.sequences_ids[0])
            if self._sized:
                tokens = _inside(tokens, tok, len(item.audio) / SAMPLE_RATE, model.time_precision)
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            text = tok.decode(tokens).strip()
            stats.append((float(result.no_speech_prob), avg_logprob, get_compression_ratio(text)))
            texts.append([t for t in tokens if t < tok.eot])
        alignments = model.find_alignment(tok, texts, encoded, frames)
        decoded = []
        for item, (no_speech, logprob, ratio), alignment in zip(
            items, stats, alignments, strict=True
        ):
            if no_speech > NO_SPEECH_SKIP and logprob < LOGPROB_SKIP:
                decoded.append(Decoded((), 0, 0.0))
            elif not self._guard.accepts_values(no_speech, ratio, logprob):
                decoded.append(Decoded((), 1, 0.0))
            else:
                decoded.append(Decoded(_words(alignment, item.offset_s), 0, 0.0))
        return decoded

    def _prompt(self, text: str | None) -> list[int]:
        previous = self._tokenizer.encode(" " + text.strip()) if text else []
        prompt: list[int] = self._model.get_prompt(self._tokenizer, previous_tokens=previous)
        return prompt


def _inside(tokens: list[int], tok: Any, duration_s: float, precision: float) -> list[int]:
    """The segments of a sized window's decode that lie in its audio.

    Without 30 s of silence after the speech to stop at, the decoder runs on past the end
    of a short window and repeats what it heard (``<0.00> I will kill you. <2.00><2.00> I will
    kill you. <4.00>...``). Keep the first segment, then each next one while it starts
    inside the audio, ends by its end (+``OVERRUN_S``) and does not repeat the one before.
    """
    kept: list[int] = []
    segment: list[int] = []
    start: float | None = None
    previous: list[int] | None = None
    for t in tokens:
        if t < tok.timestamp_begin:
            segment.append(t)
            continue
        at = (t - tok.timestamp_begin) * precision
        if start is None:
            start, segment = at, [t]
            continue
        segment.append(t)
        words = [x for x in segment if x < tok.eot]
        if previous is not None and (
            start >= duration_s or at > duration_s + OVERRUN_S or words == previous
        ):
            return kept
        kept.extend(segment)
        previous, start, segment = words, None, []
    if segment and (start is None or start < duration_s) and previous is None:
        kept.extend(segment)
    return kept


def _fit(mel: np.ndarray, frames: int) -> np.ndarray:
    out = np.zeros((mel.shape[0], frames), dtype=mel.dtype)
    n = min(frames, mel.shape[-1])
    out[:, :n] = mel[:, :n]
    return out


def _words(alignment: list[dict[str, Any]], offset_s: float) -> tuple[Word, ...]:
    from faster_whisper.transcribe import merge_punctuations

    if not alignment:
        return ()
    merge_punctuations(alignment, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
    words = []
    for timing in alignment:
        text = str(timing["word"]).strip()
        if text:
            # Rounded as the single-window path rounds, so both give the same times.
            start = offset_s + round(float(timing["start"]), 2)
            end = offset_s + round(float(timing["end"]), 2)
            words.append(Word(text, start, end, float(timing["probability"])))
    return tuple(words)
