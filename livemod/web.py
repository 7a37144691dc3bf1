"""Helpers shared by every HTTP route of the daemon (API, review desk, hooks)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

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
