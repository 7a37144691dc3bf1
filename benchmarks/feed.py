"""A daemon's event stream collected in the background, for the ingest benchmarks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any


class Feed:
    """Every event of the daemon, with the wall time it arrived here."""

    def __init__(self, ws: Any) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: Any) -> None:
        async for raw in ws:
            self.events.append((time.time(), json.loads(raw)))

    async def first(self, timeout: float, **match: Any) -> dict[str, Any] | None:
        """The first event whose fields equal ``match``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, event in self.events:
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            await asyncio.sleep(0.01)
        return None
