"""Helpers shared by every HTTP route of the daemon (API, review desk, hooks)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from livemod.errors import RequestError

ID_RULE = "1-128 letters, digits, '_', '.', '@' or '-'"
"""What a user, room or reviewer id may be, in words for error messages."""
_ID = re.compile(r"[A-Za-z0-9_.@\-]{1,128}")


def is_id(value: object) -> bool:
    """Whether ``value`` is a user, room or reviewer id (:data:`ID_RULE`).

    The whole string must match: ``re.match`` with ``$`` would let a trailing
    newline through, and ids end up in log lines, file names and URLs.
    """
    return isinstance(value, str) and _ID.fullmatch(value) is not None


Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@\-]{1,128}$")]
"""An id field of a request model (the same rule as :func:`is_id`)."""


class RequestModel(BaseModel):
    """A request body: unknown fields refused, no type coercion ("1" is not 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    """A response body: may grow fields, which clients ignore."""

    model_config = ConfigDict(extra="allow")


M = TypeVar("M", bound=BaseModel)

_MESSAGES = {
    "missing": "required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "dict_type": "must be a JSON object",
    "string_pattern_mismatch": ID_RULE,
    "string_too_short": "must not be empty",
}


def parse(model: type[M], data: dict[str, Any]) -> M:
    """A request body as its model; a 422 that names the first wrong field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        extra = sorted({str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden"})
        if extra:
            raise RequestError(f"unknown field(s): {', '.join(extra)}", status=422) from exc
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        what = _MESSAGES.get(first["type"], first["msg"])
        raise RequestError(f"{where}: {what}", status=422) from exc


def respond(model: type[BaseModel], body: Any, status: int = 200, **kw: Any) -> web.Response:
    """A JSON response shaped, and checked, by the model the API document publishes."""
    shaped = model.model_validate(body).model_dump(mode="json")
    return web.json_response(shaped, status=status, **kw)


MAX_JSON_DEPTH = 32
"""No request of the API nests deeper: a deeper body is refused with a 400."""


def nesting_depth(value: Any) -> int:
    """How deep lists and objects nest in parsed JSON (iterative: no recursion limit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


async def json_body(request: web.Request, allowed: set[str] | None = None) -> dict[str, Any]:
    """The request's JSON object; 415/400 when it is not one, 422 for fields outside
    ``allowed`` (when given)."""
    if request.content_type != "application/json":
        raise RequestError("expected Content-Type: application/json", status=415)
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"body is not UTF-8: invalid byte at {exc.start}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(f"body is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    except RecursionError as exc:  # the C parser refuses some thousand levels cleanly
        raise RequestError(f"body is nested too deep (at most {MAX_JSON_DEPTH})") from exc
    depth = nesting_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"body is nested {depth} deep (at most {MAX_JSON_DEPTH})")
    if not isinstance(data, dict):
        raise RequestError("body must be a JSON object")
    unknown = set(data) - allowed if allowed is not None else set()
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}", status=422)
    return data


async def form_body(request: web.Request) -> dict[str, str]:
    """A form body's text fields; 400 when it is not UTF-8 (a streaming server's hook
    carries what a publisher typed into its URL)."""
    try:
        form = await request.post()
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(f"form body is not valid UTF-8 form data: {exc}") from exc
    return {k: v for k, v in form.items() if isinstance(v, str)}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def body_deadline(timeout_s: float) -> Middleware:
    """A middleware that reads each request body before its handler runs, within
    ``timeout_s`` (``http.read_timeout_s``) of the handler being reached.

    A client that sends its body slower (slowloris) is answered ``408`` and its
    connection closed, instead of holding it open for as long as it likes; handlers
    then read the body from memory (``read``, ``text``, ``json``, ``post``). No route
    takes multipart bodies, which cannot be read ahead of their handler: they are
    refused with ``415``. The request head has its own deadline (the server's
    ``keepalive_timeout``, see ``livemod.app.api.start_http``).
    """

    @web.middleware
    async def read_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            if request.content_type.startswith("multipart/"):
                raise RequestError("multipart bodies are not accepted", status=415)
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()
            except TimeoutError:
                msg = f"request body not received within {timeout_s:g} s (http.read_timeout_s)"
                response = web.json_response({"error": msg}, status=408)
                response.force_close()
                return response
        return await handler(request)

    return read_body
