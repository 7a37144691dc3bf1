"""A scripted stand-in for an LLM endpoint, for tests, benchmarks and local trials.

It speaks both wire protocols the client uses, on 127.0.0.1: OpenAI-style
``POST /v1/chat/completions`` and Ollama's ``POST /api/chat``. It checks each
request the way a real server would (message shape, JPEG data URLs or base64
images, the JSON-schema response format) and answers a 400 when it is wrong.
Each request takes the next scripted ``Reply`` (or the default one): a verdict,
a slow verdict, an HTTP status (optionally with ``Retry-After``), a body that is
not JSON, content that is not JSON, or a verdict off the schema. With ``responder``
set, a request the script does not answer gets the reply it returns for what the
request carried (a stand-in that "sees": benchmarks label their own pictures).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

ReplyKind = Literal["verdict", "status", "bad_json", "bad_content", "off_schema"]

SAFE: dict[str, Any] = {
    "unsafe": False,
    "confidence": 0.9,
    "label": "none",
    "rationale": "nothing against the policy",
    "action": "none",
}


def unsafe(label: str, action: str, confidence: float = 0.9, **extra: Any) -> dict[str, Any]:
    """A verdict that the clip violates ``label`` and needs ``action``."""
    return {
        "unsafe": True,
        "confidence": confidence,
        "label": label,
        "rationale": f"the clip shows {label} content",
        "action": action,
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Reply:
    kind: ReplyKind = "verdict"
    verdict: dict[str, Any] = field(default_factory=lambda: dict(SAFE))
    delay_s: float = 0.0
    status: int = 200
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Seen:
    """What one request carried (for assertions)."""

    path: str
    model: str
    images: int
    authorization: str | None
    prompt: str
    body: dict[str, Any] = field(repr=False)
    at: float = 0.0

    def jpegs(self) -> list[bytes]:
        """The JPEG images the request carried, in order (either protocol)."""
        user = self.body["messages"][-1]
        if isinstance(user.get("content"), list):
            prefix = "data:image/jpeg;base64,"
            urls = [str(p["image_url"]["url"]) for p in user["content"] if "image_url" in p]
            return [base64.b64decode(u[len(prefix) :]) for u in urls]
        return [base64.b64decode(str(i)) for i in user.get("images", [])]


class FakeLlm:
    """``async with FakeLlm() as llm: llm.base_url ...``"""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self.responder: Callable[[Seen], Reply] | None = None
        self.script: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self.rejected: list[str] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port = 0

    @property
    def base_url(self) -> str:
        """For ``llm.provider: openai``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ollama_url(self) -> str:
        """For ``llm.provider: ollama``."""
        return f"http://127.0.0.1:{self.port}"

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with these, in order; then the default."""
        self.script.extend(replies)

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/api/chat", self._ollama)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        self._closing.set()  # slow replies end now, so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLlm:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- protocol ---------------------------------------------------------------------

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, problem = await _json(request)
        if body is not None and problem is None:
            problem = _check_openai(body)
        if problem is not None or body is None:
            return self._reject(problem or "no body")
        user = body["messages"][-1]["content"]
        prompt = next(p["text"] for p in user if p.get("type") == "text")
        images = sum(1 for p in user if p.get("type") == "image_url")
        return await self._answer(request, body, prompt, images, openai=True)

    async def _ollama(self, request: web.Request) -> web.StreamResponse:
        body, problem = await _json(request)
        if body is not None and problem is None:
            problem = _check_ollama(body)
        if problem is not None or body is None:
            return self._reject(problem or "no body")
        user = body["messages"][-1]
        return await self._answer(
            request, body, user["content"], len(user.get("images", [])), openai=False
        )

    def _reject(self, problem: str) -> web.Response:
        self.rejected.append(problem)
        return web.json_response({"error": {"message": problem}}, status=400)

    async def _answer(
        self, request: web.Request, body: dict[str, Any], prompt: str, images: int, *, openai: bool
    ) -> web.StreamResponse:
        seen = Seen(
            path=request.path,
            model=str(body.get("model")),
            images=images,
            authorization=request.headers.get("Authorization"),
            prompt=prompt,
            body=body,
            at=time.monotonic(),
        )
        self.seen.append(seen)
        if self.script:
            reply = self.script.popleft()
        else:
            reply = self.responder(seen) if self.responder is not None else self.default
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(reply.delay_s):
                    await self._closing.wait()
        if reply.kind == "status":
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            return web.json_response(
                {"error": {"message": f"scripted {reply.status}"}},
                status=reply.status,
                headers=headers,
            )
        if reply.kind == "bad_json":
            return web.Response(text='{"choices": [ truncated', content_type="application/json")
        if reply.kind == "bad_content":
            content = "I think this clip is probably fine."
        elif reply.kind == "off_schema":
            content = json.dumps({"unsafe": "no", "confidence": 1.7, "label": "none"})
        else:
            content = json.dumps(reply.verdict)
        model = str(body.get("model"))
        if openai:
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        return web.json_response(
            {
                "model": model,
                "created_at": "2024-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": content},
                "done": True,
                "done_reason": "stop",
            }
        )


async def _json(request: web.Request) -> tuple[dict[str, Any] | None, str | None]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return None, "body is not JSON"
    if not isinstance(body, dict):
        return None, "body is not an object"
    if not body.get("model") or not isinstance(body.get("messages"), list):
        return body, "model and messages are required"
    return body, None


def _is_jpeg(b64: str) -> bool:
    try:
        return base64.b64decode(b64, validate=True)[:2] == b"\xff\xd8"
    except (binascii.Error, ValueError):
        return False


def _check_openai(body: dict[str, Any]) -> str | None:
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema" or "schema" not in (fmt.get("json_schema") or {}):
        return "response_format must be a json_schema"
    user = body["messages"][-1]
    if user.get("role") != "user" or not isinstance(user.get("content"), list):
        return "the last message must be the user's, with content parts"
    for part in user["content"]:
        if part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            prefix = "data:image/jpeg;base64,"
            if not url.startswith(prefix) or not _is_jpeg(url[len(prefix) :]):
                return "image_url must be a JPEG data URL"
        elif part.get("type") != "text":
            return f"unknown content part {part.get('type')!r}"
    if not any(p.get("type") == "text" for p in user["content"]):
        return "a text part is required"
    return None


def _check_ollama(body: dict[str, Any]) -> str | None:
    if body.get("stream") is not False:
        return "stream must be false for one JSON answer"
    if not isinstance(body.get("format"), dict):
        return "format must be the JSON schema"
    user = body["messages"][-1]
    if user.get("role") != "user" or not isinstance(user.get("content"), str):
        return "the last message must be the user's, with string content"
    images = user.get("images", [])
    if not isinstance(images, list) or not all(_is_jpeg(str(i)) for i in images):
        return "images must be base64 JPEGs"
    return None
