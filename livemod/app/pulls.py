"""Hook-driven sessions: start one per publisher, keep its pull on the publisher
(redirects, re-publishes), end it when the publisher leaves.

Each session reads its stream through a :class:`ReconnectingSource`; this side
holds the matching :class:`PullControl`. The pull URL carries a mark
(``livemod_pull=TOKEN``) so nginx-rtmp's ``on_play`` for the daemon's own play can
be told from a viewer's, which lets the ``on_publish`` answer wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from livemod.config import Config
from livemod.ingest.audio import AudioSink
from livemod.ingest.av_source import SourceOptions
from livemod.ingest.hooks import PULL_MARK, HookCall, PullRules, from_tcurl, pull_url, with_mark
from livemod.ingest.reconnect import PullControl, ReconnectingSource
from livemod.ingest.rooms import Publisher
from livemod.ingest.source import Deliver, FrameSource, SourceFactory
from livemod.sampling import FrameSampler

if TYPE_CHECKING:
    from livemod.pipeline.runtime import Runtime

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Pull:
    control: PullControl
    token: str
    played: asyncio.Event = field(default_factory=asyncio.Event)


class PullManager:
    """Sessions started by hooks, by session id. Use on the event loop."""

    def __init__(self, config: Config, rules: PullRules) -> None:
        self._config = config
        self._rules = rules
        self._pulls: dict[str, _Pull] = {}
        self._by_token: dict[str, _Pull] = {}
        self._play_hook: bool | None = None
        """Whether nginx-rtmp's on_play reaches us (None: not known yet)."""
        self._tasks: set[asyncio.Task[object]] = set()

    def on_play(self, call: HookCall) -> None:
        pull = self._by_token.get(call.args.get(PULL_MARK, ""))
        if pull is not None:
            self._play_hook = True
            pull.played.set()

    def url_for(self, call: HookCall, name: str, remote: str) -> str:
        """The pull URL of stream ``name`` published by ``call``, which ``remote`` sent;
        ``RequestError`` (403) when the daemon may not open it (:class:`PullRules`)."""
        template = self._config.hooks.pull_url
        url = pull_url(call, name, remote, template)
        self._rules.check(url, remote, from_tcurl=from_tcurl(call, template))
        return url

    async def ensure_session(self, runtime: Runtime, pub: Publisher, remote: str) -> None:
        """Start ``pub``'s session, or point its still-running one at it."""
        url = self.url_for(pub.call, pub.stream_name, remote)
        old = runtime.sessions.get(pub.session_id) if pub.session_id else None
        pull = self._pulls.get(pub.session_id or "")
        if old is not None and pull is not None and old.status in ("starting", "live"):
            if old.info.key == f"{pub.who.user_id}:{pub.who.room_id}":
                # The same publisher is back (server restart, network drop): the
                # session goes on, with its history, from the new publish.
                await self._switch(pull, pub, url)
                return
            await runtime.sessions.stop(old.info.id)
        token = uuid.uuid4().hex[:12]
        control = PullControl(with_mark(url, token), give_up_s=self._config.hooks.reconnect_max_s)
        pull = _Pull(control, token)
        self._by_token[token] = pull
        try:
            session = await runtime.sessions.start(
                control.url,
                pub.who.user_id,
                pub.who.room_id,
                metadata={"server": pub.server, "app": pub.app, "stream": pub.name},
                source=self._factory(control),
                relay=_flag(pub.call.args.get("relay")),
            )
        except BaseException:
            self._by_token.pop(token, None)
            raise
        sid = session.info.id
        pub.session_id = sid
        self._pulls[sid] = pull
        loop = asyncio.get_running_loop()

        def on_retry(attempt: int, why: str) -> None:
            loop.call_soon_threadsafe(self._announce_retry, runtime, sid, attempt, why)

        control.on_retry = on_retry
        await self._wait_play(pull, pub)

    async def follow(self, pub: Publisher, remote: str) -> None:
        """One of our redirects landed: pull from the publisher's new stream name."""
        pull = self._pulls.get(pub.session_id or "")
        if pull is not None:
            await self._switch(pull, pub, self.url_for(pub.call, pub.stream_name, remote))

    def finish(self, pub: Publisher) -> None:
        """The publisher left: its session ends as a normal end of stream."""
        pull = self._pulls.get(pub.session_id or "")
        if pull is not None:
            pull.control.finish()

    def forget(self, session_id: str) -> None:
        """The session ended (committed ``ended``/``error`` event)."""
        pull = self._pulls.pop(session_id, None)
        if pull is not None:
            self._by_token.pop(pull.token, None)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _switch(self, pull: _Pull, pub: Publisher, url: str) -> None:
        pull.played.clear()
        pull.control.switch(with_mark(url, pull.token))
        await self._wait_play(pull, pub)

    def _factory(self, control: PullControl) -> SourceFactory:
        ingest = self._config.ingest

        def build(
            stream_id: str,
            sampler: FrameSampler,
            deliver: Deliver,
            deliver_audio: AudioSink | None,
        ) -> FrameSource:
            options = SourceOptions(
                url=control.url,
                open_timeout_s=ingest.open_timeout_s,
                read_timeout_s=ingest.read_timeout_s,
                hwaccel=None if ingest.hwaccel == "none" else ingest.hwaccel,
                max_ts_jump_s=ingest.max_ts_jump_s,
                max_pixels=ingest.max_pixels,
                threaded_pixels=ingest.threaded_pixels,
                fast_decode=ingest.fast_decode,
                nice=ingest.nice,
            )
            return ReconnectingSource(
                stream_id, options, sampler, deliver, control, deliver_audio=deliver_audio
            )

        return build

    async def _wait_play(self, pull: _Pull, pub: Publisher) -> None:
        """Hold the hook's answer until nginx-rtmp registered our own play: a player
        that joins before the publisher starts gets its first keyframe at once,
        while a late one waits up to a whole GOP (nginx-rtmp keeps no GOP cache)."""
        limit = self._config.hooks.hold_publish_s
        if pub.server != "nginx-rtmp" or limit <= 0 or self._play_hook is False:
            return
        try:
            await asyncio.wait_for(pull.played.wait(), limit)
        except TimeoutError:
            if self._play_hook is None:
                self._play_hook = False
                log.warning(
                    "no on_play from nginx-rtmp for the daemon's own pull: add "
                    "'on_play' to the rtmp application (first frames come a GOP later)"
                )

    def _announce_retry(self, runtime: Runtime, sid: str, attempt: int, why: str) -> None:
        session = runtime.sessions.get(sid)
        if session is None:
            return
        task = asyncio.ensure_future(session.announce("reconnecting", attempt=attempt, error=why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _flag(value: str | None) -> bool | None:
    """A publish URL's ``relay`` query arg (``?relay=1``): None when absent."""
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")
