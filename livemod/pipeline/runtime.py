"""The narrow runtime: what a long-lived component may use, and nothing more.

The app layer builds one ``Runtime`` and hands it to every ``Component``
(enforcers, webhooks, escalation, the review desk, WHIP, streaming-server hooks).
Components never see the daemon: they publish and follow events through the hub,
read and write the store, look up and start sessions through the registry, and
move standing decisions through the vote engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from livemod.config import Config
from livemod.events.hub import EventHub
from livemod.pipeline.registry import SessionRegistry
from livemod.policy.taxonomy import Policy
from livemod.policy.vote import VoteEngine
from livemod.store import Store


@dataclass(frozen=True, slots=True)
class Runtime:
    """The shared parts of a running daemon that components are allowed to touch."""

    config: Config
    policy: Policy
    engine: VoteEngine
    store: Store
    hub: EventHub
    sessions: SessionRegistry
    analyzers: tuple[str, ...]
    """Names of the analyzers this process runs (the ``sources`` an action can carry)."""


class Component(Protocol):
    """A long-lived part, started after the store, hub and servers, stopped before them.

    Most consume committed events through ``runtime.hub`` exactly as a WebSocket
    client would, so they never slow the pipeline down.
    """

    name: str

    async def start(self, runtime: Runtime) -> None: ...

    async def stop(self) -> None: ...

    def add_routes(self, app: web.Application) -> None:
        """Register HTTP routes (called before the HTTP server starts)."""
        ...
