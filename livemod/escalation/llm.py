"""The LLM client: one verdict per clip over plain HTTP (aiohttp), no vendor SDK.

Two wire protocols, chosen by ``llm.provider``:

- ``openai``: ``POST {base_url}/chat/completions`` with the frames as JPEG data
  URLs in ``image_url`` content parts and ``response_format`` set to the verdict's
  JSON schema. vLLM, llama.cpp's server, LM Studio, LiteLLM and Ollama's ``/v1``
  speak it too.
- ``ollama``: ``POST {base_url}/api/chat`` with base64 ``images`` on the user
  message, ``format`` set to the schema and ``stream: false``.

Every failure is an ``LlmError`` that says whether a retry may help (timeouts,
429, 5xx and broken connections) and how long the server asked to wait.
"""

from __future__ import annotations

import base64
import email.utils
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from livemod.config import LlmConfig
from livemod.errors import LivemodError
from livemod.escalation.verdict import Verdict, VerdictError, parse_verdict, verdict_schema

SYSTEM_PROMPT = (
    "You are a content moderator for live video streams. You receive the most recent "
    "sampled frames of a stream, any speech transcript and on-screen text, and the "
    "scores of automatic first-pass detectors with the action they took. Judge whether "
    "the clip violates the policy category named, taking context into account (news, "
    "education, art and medical content can be acceptable). Answer only with the JSON "
    "object the schema describes: unsafe, confidence (0 to 1), label (the violated "
    "category, or 'none'), a short rationale, the action to take ('none' when safe), "
    "and possible_minor (true when a minor may be shown)."
)


class LlmError(LivemodError):
    """A call to the LLM failed. ``kind`` names the failure for logs and events."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Clip:
    """What the model is shown: recent frames and the first pass's view of them."""

    stream_id: str
    category: str
    action: str
    tier: str
    confidence: float
    sources: tuple[str, ...]
    media_time_s: float
    jpegs: tuple[bytes, ...] = field(repr=False)
    scores: dict[str, float] = field(default_factory=dict)
    transcript: str = ""
    ocr_text: str = ""

    def prompt(self) -> str:
        """The text part of the user message."""
        lines = [
            f"Policy category under review: {self.category}",
            f"First pass: action {self.action} (tier {self.tier}, confidence "
            f"{self.confidence:.2f}) from {', '.join(self.sources) or 'no source'}",
            f"Media time: {self.media_time_s:.1f} s; {len(self.jpegs)} frame(s), oldest first",
        ]
        if self.scores:
            shown = ", ".join(f"{k}={v:.3f}" for k, v in sorted(self.scores.items())[:40])
            lines.append(f"Detector scores: {shown}")
        lines.append(f"Transcript: {self.transcript or '(none)'}")
        lines.append(f"On-screen text: {self.ocr_text or '(none)'}")
        return "\n".join(lines)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class LlmClient:
    """Asks the configured endpoint for a verdict. One instance per daemon."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        config: LlmConfig,
        *,
        categories: Sequence[str],
        api_key: str | None = None,
    ) -> None:
        if config.base_url is None or not config.model:
            raise ValueError("llm.base_url and llm.model are required")
        self._http = http
        self._config = config
        self._categories = list(categories)
        self._api_key = api_key
        self._schema = verdict_schema(self._categories)
        base = config.base_url.rstrip("/")
        self.url = f"{base}/api/chat" if config.provider == "ollama" else f"{base}/chat/completions"

    def request_body(self, clip: Clip) -> dict[str, Any]:
        """The JSON body for one clip in the configured protocol."""
        images = [base64.b64encode(j).decode("ascii") for j in clip.jpegs]
        system = {"role": "system", "content": SYSTEM_PROMPT}
        if self._config.provider == "ollama":
            return {
                "model": self._config.model,
                "messages": [system, {"role": "user", "content": clip.prompt(), "images": images}],
                "format": self._schema,
                "stream": False,
                "options": {"temperature": 0},
            }
        parts: list[dict[str, Any]] = [{"type": "text", "text": clip.prompt()}]
        parts.extend(
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{b64}"}}
            for b64 in images
        )
        return {
            "model": self._config.model,
            "messages": [system, {"role": "user", "content": parts}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "moderation_verdict", "schema": self._schema},
            },
            "temperature": 0,
            "max_tokens": 512,
        }

    async def judge(self, clip: Clip) -> Verdict:
        """One call, no retries; raises ``LlmError``."""
        return await self.send(self.request_body(clip))

    async def send(self, body: dict[str, Any]) -> Verdict:
        """POST a prepared body and parse the verdict out of the answer."""
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        timeout = aiohttp.ClientTimeout(total=self._config.timeout_s)
        try:
            async with self._http.post(
                self.url, data=json.dumps(body), headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise LlmError(
                f"no answer within {self._config.timeout_s} s", kind="timeout", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise LlmError(f"connection failed: {exc}", kind="connect", retryable=True) from exc
        if status == 429:
            raise LlmError(
                "rate limited (429)", kind="http_429", retryable=True, retry_after_s=retry_after
            )
        if status >= 500:
            raise LlmError(
                f"server error {status}",
                kind=f"http_{status}",
                retryable=True,
                retry_after_s=retry_after,
            )
        if status != 200:
            snippet = raw[:200].decode("utf-8", "replace")
            raise LlmError(f"HTTP {status}: {snippet}", kind=f"http_{status}")
        try:
            return parse_verdict(self._content(raw), self._categories)
        except VerdictError as exc:
            raise LlmError(str(exc), kind="invalid_verdict") from exc

    def _content(self, raw: bytes) -> str:
        try:
            envelope = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VerdictError(f"answer is not JSON: {exc}") from exc
        try:
            if self._config.provider == "ollama":
                content = envelope["message"]["content"]
            else:
                message = envelope["choices"][0]["message"]
                if message.get("refusal"):
                    raise VerdictError(f"model refused: {str(message['refusal'])[:200]}")
                content = message["content"]
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise VerdictError(f"answer lacks the message content ({exc!r})") from exc
        if not isinstance(content, str):
            raise VerdictError("message content is not a string")
        return content
