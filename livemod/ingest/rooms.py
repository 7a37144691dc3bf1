"""Who publishes where, and which rooms are held by a standing ``end`` or ``pause``.

Pure: hook calls and action events in, admissions out; time is passed in. The
asyncio glue (``livemod.app.hooks``) starts and stops sessions and calls the
enforcers from what this table decides.

Rules (``docs/streaming-servers.md``):

* An ``end`` refuses every publish to its room for ``end_refuse_s``; after that
  the end is lifted and the next publisher is moderated afresh for that category.
* A ``pause`` keeps a returning publisher on the holding stream (nginx-rtmp answers
  ``on_publish`` with a redirect) where it stays moderated, so the pause can lift.
* A publisher keeps its ``userId:roomId`` vote history across drops and re-publishes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from livemod.ingest.hooks import HookCall, Identity, Server

HeldAction = Literal["end", "pause"]
StreamKey = tuple[Server, str, str]
"""(server, app, stream name)."""


@dataclass(slots=True)
class Publisher:
    """One live publisher as the streaming server reported it."""

    server: Server
    app: str
    name: str
    """The stream name it published to (its room's stream)."""
    who: Identity
    client_id: str
    call: HookCall
    """The publish call, kept to derive pull URLs and enforcement targets."""
    stream_name: str = ""
    """Where it publishes now: ``name``, or the holding stream while paused."""
    moving_from: str | None = None
    """A redirect is in flight from this name: its publish_done is expected."""
    session_id: str | None = None

    def __post_init__(self) -> None:
        if not self.stream_name:
            self.stream_name = self.name

    @property
    def key(self) -> StreamKey:
        return (self.server, self.app, self.name)

    @property
    def held(self) -> bool:
        return self.stream_name != self.name


@dataclass(frozen=True, slots=True)
class Hold:
    """A standing ``end`` or ``pause`` for a room, from its ``start`` action event."""

    action: HeldAction
    category: str
    user_id: str
    since: float
    stream_id: str
    event: dict[str, Any] = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        return f"{self.user_id}:{self.event.get('room_id', '')}"


@dataclass(frozen=True, slots=True)
class Admission:
    """What to answer a publish. ``status`` 2xx admits; 3xx redirects; 403 refuses."""

    status: int
    reason: str = ""
    redirect_to: str | None = None
    moved: Publisher | None = None
    """A publish that is one of ours redirected (pause or resume), not a new one."""
    lifted: tuple[Hold, ...] = ()
    """Holds that lapsed and must be lifted (their ``stop`` events published)."""


class RoomTable:
    """Publishers by stream, holds by room. Not thread-safe: use on the event loop."""

    def __init__(self, *, end_refuse_s: float, pause_stream: str) -> None:
        self._end_refuse_s = end_refuse_s
        self._pause_stream = pause_stream
        self.publishers: dict[StreamKey, Publisher] = {}
        self.holds: dict[str, dict[tuple[str, str], Hold]] = {}
        self._moving: dict[StreamKey, Publisher] = {}

    def hold_name(self, name: str) -> str:
        return self._pause_stream.format(name=name)

    # -- hooks -------------------------------------------------------------------

    def admit(self, call: HookCall, who: Identity | None, now: float) -> Admission:
        """Decide a publish. ``who`` is None for a publish the caller could not
        identify, which can only be one of our own redirects."""
        moved = self._moving.get((call.server, call.app, call.name))
        if moved is not None and (not call.client_id or moved.client_id == call.client_id):
            del self._moving[(call.server, call.app, call.name)]
            moved.stream_name = call.name
            return Admission(200, "redirected publisher", moved=moved)
        if who is None:
            return Admission(403, "unidentified publish")
        holds = self.holds.get(who.room_id, {})
        lifted: list[Hold] = []
        for hold in list(holds.values()):
            if hold.action != "end":
                continue
            if now - hold.since < self._end_refuse_s:
                return Admission(403, f"room {who.room_id} was ended by moderation")
            lifted.append(hold)
        for hold in lifted:
            del holds[(hold.category, hold.action)]
        paused = any(h.action == "pause" for h in holds.values())
        if paused and call.server == "nginx-rtmp":
            return Admission(302, "room is paused", self.hold_name(call.name), lifted=tuple(lifted))
        return Admission(200, lifted=tuple(lifted))

    def register(self, call: HookCall, who: Identity, stream_name: str) -> Publisher:
        """Record an admitted publisher (replacing any stale one on the same stream)."""
        pub = Publisher(call.server, call.app, call.name, who, call.client_id, call, stream_name)
        old = self.publishers.get(pub.key)
        if old is not None:
            pub.session_id = old.session_id
        self.publishers[pub.key] = pub
        return pub

    def publish_done(self, call: HookCall) -> tuple[Publisher | None, bool]:
        """The publisher that stopped, and whether that was our own redirect."""
        for pub in self.publishers.values():
            if pub.server != call.server or pub.app != call.app:
                continue
            if call.client_id and pub.client_id != call.client_id:
                continue
            if call.name not in (pub.name, pub.stream_name):
                continue
            if pub.moving_from is not None:
                # nginx-rtmp names either stream here (after an on_publish redirect it
                # keeps the first name); a move in flight explains this publish_done.
                pub.moving_from = None
                return pub, True
            del self.publishers[pub.key]
            self._moving = {k: v for k, v in self._moving.items() if v is not pub}
            return pub, False
        return None, False

    def expect_move(self, pub: Publisher, to_name: str) -> None:
        """A redirect of ``pub`` to ``to_name`` is about to be asked of the server."""
        pub.moving_from = pub.stream_name
        self._moving[(pub.server, pub.app, to_name)] = pub

    def cancel_move(self, pub: Publisher, to_name: str) -> None:
        pub.moving_from = None
        self._moving.pop((pub.server, pub.app, to_name), None)

    def by_session(self, session_id: str) -> Publisher | None:
        for pub in self.publishers.values():
            if pub.session_id == session_id:
                return pub
        return None

    # -- action events -------------------------------------------------------------

    def on_action(self, event: dict[str, Any], now: float) -> Hold | None:
        """Track holds from committed action events; return the hold it started or
        ended (``None`` when the event is not an end/pause)."""
        action = event.get("action")
        if action not in ("end", "pause"):
            return None
        room = str(event.get("room_id", ""))
        category = str(event.get("category", ""))
        holds = self.holds.setdefault(room, {})
        if event.get("state") == "start":
            hold = Hold(
                action=action,
                category=category,
                user_id=str(event.get("user_id", "")),
                since=now,
                stream_id=str(event.get("stream_id", "")),
                event=event,
            )
            holds[(category, action)] = hold
            return hold
        ended = holds.pop((category, action), None)
        if not holds:
            self.holds.pop(room, None)
        return ended

    def held(self, room_id: str, action: HeldAction) -> bool:
        return any(h.action == action for h in self.holds.get(room_id, {}).values())
