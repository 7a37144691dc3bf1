"""Helpers shared by every HTTP route of the daemon (API, review desk, hooks)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from livemod.errors import RequestError


async def json_body(request: web.Request, allowed: set[str] | None = None) -> dict[str, Any]:
    """The request's JSON object; 415/400 when it is not one, 422 for fields outside
    ``allowed`` (when given)."""
    if request.content_type != "application/json":
        raise RequestError("expected Content-Type: application/json", status=415)
    try:
        data = await request.json()
    except json.JSONDecodeError as exc:
        raise RequestError(f"body is not valid JSON: {exc.msg} at char {exc.pos}") from exc
    if not isinstance(data, dict):
        raise RequestError("body must be a JSON object")
    unknown = set(data) - allowed if allowed is not None else set()
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(sorted(unknown))}", status=422)
    return data
