"""Reloading known-bad lists without a restart: ``POST /v1/known-bad/reload`` and SIGHUP.

The lists are read off the event loop; the new set replaces the old in one reference
swap (``KnownBadAnalyzer.reload``), so samples in flight keep matching against one
whole list. A missing file or a malformed line leaves the old lists in place and
says why: in the HTTP answer (422) and in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiohttp import web

from livemod.app.openapi import KnownBadReloadResult
from livemod.errors import ConfigError, RequestError
from livemod.pipeline.runtime import Runtime
from livemod.vision.base import FrameAnalyzer
from livemod.vision.known_bad import KnownBadAnalyzer
from livemod.web import respond

__all__ = ["KnownBadReloader", "reloaders"]

log = logging.getLogger(__name__)


class KnownBadReloader:
    """A component that reloads one ``KnownBadAnalyzer``'s lists on request."""

    name = "known_bad"

    def __init__(self, analyzer: KnownBadAnalyzer) -> None:
        self.analyzer = analyzer
        # One reload at a time: a second request waits and then loads again, so it
        # sees files written after the first began.
        self._lock = asyncio.Lock()

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/known-bad/reload", self._handle)

    async def reload(self) -> dict[str, int]:
        """Reload every list; raises ConfigError and keeps the old lists on failure."""
        async with self._lock:
            sizes = await asyncio.to_thread(self.analyzer.reload)
        log.info("known-bad lists reloaded", extra={"lists": sizes})
        return sizes

    async def reload_logged(self) -> None:
        """For SIGHUP: reload, and on failure only log (the reload logged why)."""
        with contextlib.suppress(ConfigError):
            await self.reload()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            sizes = await self.reload()
        except ConfigError as exc:
            raise RequestError(f"reload failed, the old lists stay: {exc}", status=422) from exc
        body = {
            "lists": [{"name": name, "entries": n} for name, n in sizes.items()],
            "entries": sum(sizes.values()),
        }
        return respond(KnownBadReloadResult, body)


def reloaders(analyzers: Sequence[FrameAnalyzer]) -> list[KnownBadReloader]:
    """A reloader for each known-bad analyzer among ``analyzers``."""
    return [KnownBadReloader(a) for a in analyzers if isinstance(a, KnownBadAnalyzer)]
