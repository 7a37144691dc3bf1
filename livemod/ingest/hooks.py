"""Streaming-server hook requests parsed into typed calls, and the identity rules.

Pure: no I/O, no clock. Three servers speak three dialects:

* nginx-rtmp ``on_publish``/``on_publish_done``/``on_play``: a form with ``call``,
  ``app``, ``name``, ``addr``, ``clientid``, ``tcurl`` and the publish URL's own query
  args merged in.
* MediaMTX: the HTTP auth hook (JSON ``{"action", "path", "query", "id", "protocol",
  ...}``) and ``runOnReady``/``runOnNotReady`` forwarded by a one-line ``curl``
  (form ``event=ready|not_ready``, ``path``, ``query``, ``source_type``,
  ``source_id``, ``rtsp_port``).
* SRS ``http_hooks``: JSON ``{"action": "on_publish" | "on_unpublish", "client_id",
  "app", "stream", "param", "tcUrl", ...}``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from livemod.errors import RequestError
from livemod.ingest.targets import Network, embedded_ipv4, in_networks, parse_address
from livemod.web import ID_RULE, is_id

Server = Literal["nginx-rtmp", "mediamtx", "srs"]
CallKind = Literal["publish", "publish_done", "play", "other"]

PULL_MARK = "livemod_pull"
"""Query arg the daemon adds to its own pull, so its ``on_play`` can be recognised."""

_TEMPLATE_FIELDS = ("tcurl", "app", "name", "server", "rtsp_port")


@dataclass(frozen=True, slots=True)
class HookCall:
    """One hook request, whatever server sent it."""

    server: Server
    kind: CallKind
    app: str
    name: str
    """Stream name (nginx-rtmp, SRS) or path (MediaMTX)."""
    client_id: str
    args: dict[str, str] = field(default_factory=dict)
    """The publish URL's query args."""
    tcurl: str = ""
    addr: str = ""
    source_type: str = ""
    """MediaMTX: the publisher's connection type (``rtmpConn``, ``rtspSession``...)."""
    rtsp_port: str = ""
    ready: bool = True
    """False for a MediaMTX auth request: allow or refuse, but nothing is live yet."""


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    room_id: str


@dataclass(frozen=True, slots=True)
class IdentityRules:
    """Who is publishing where, and whether the stream key is right."""

    user_arg: str = "user_id"
    room_arg: str | None = None
    default_user_id: str | None = None
    key_check: Literal["none", "shared", "signed"] = "none"
    key_arg: str = "key"
    secret: str | None = None

    def identify(self, call: HookCall) -> Identity:
        """Map a publish to ``userId:roomId``; ``RequestError(403)`` when it cannot be."""
        room = call.args.get(self.room_arg, "") if self.room_arg else call.name
        if not room:
            raise RequestError(
                f"publish has no room: query arg {self.room_arg!r} missing", status=403
            )
        user = call.args.get(self.user_arg) or self.default_user_id
        if not user:
            raise RequestError(
                f"publish URL has no {self.user_arg!r} query arg (hooks.user_arg)", status=403
            )
        for what, value in (("room id", room), ("user id", user)):
            if not is_id(value):
                raise RequestError(f"{what} must be {ID_RULE}", status=403)
        return Identity(user_id=user, room_id=room)

    def check_key(self, call: HookCall, who: Identity) -> None:
        """``RequestError(403)`` unless the stream key matches (``key_check``)."""
        if self.key_check == "none":
            return
        if not self.secret:
            raise RequestError("hooks.key_check is on but the publish secret is empty", status=403)
        given = call.args.get(self.key_arg, "")
        expected = self.secret if self.key_check == "shared" else signed_key(self.secret, who)
        if not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise RequestError("wrong or missing stream key", status=403)


def signed_key(secret: str, who: Identity) -> str:
    """The stream key a platform hands a publisher under ``key_check: signed``."""
    msg = f"{who.user_id}:{who.room_id}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def _need(data: Mapping[str, Any], name: str, server: str) -> str:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value):
        raise RequestError(f"{server} hook: field {name!r} is missing", status=400)
    if not isinstance(value, str | int):
        raise RequestError(f"{server} hook: field {name!r} must be a string", status=400)
    return str(value)


def _query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text.lstrip("?"), keep_blank_values=True))


_NGINX_FIELDS = {
    "call", "app", "name", "addr", "clientid", "flashver", "swfurl", "tcurl", "pageurl", "type",
}  # fmt: skip


def parse_nginx(form: Mapping[str, str]) -> HookCall:
    """An nginx-rtmp ``on_*`` notification (form fields)."""
    call = _need(form, "call", "nginx-rtmp")
    kinds: dict[str, CallKind] = {"publish": "publish", "publish_done": "publish_done"}
    kind = kinds.get(call, "play" if call == "play" else "other")
    name = _need(form, "name", "nginx-rtmp") if kind != "other" else form.get("name", "")
    return HookCall(
        server="nginx-rtmp",
        kind=kind,
        app=_need(form, "app", "nginx-rtmp"),
        name=name,
        client_id=_need(form, "clientid", "nginx-rtmp"),
        args={k: v for k, v in form.items() if k not in _NGINX_FIELDS},
        tcurl=form.get("tcurl", ""),
        addr=form.get("addr", ""),
    )


def parse_mediamtx(data: Mapping[str, Any]) -> HookCall:
    """MediaMTX's HTTP auth request (JSON, has ``action``) or a forwarded
    ``runOnReady``/``runOnNotReady`` (has ``event``)."""
    if "action" in data:
        action = _need(data, "action", "mediamtx")
        path = _need(data, "path", "mediamtx") if action == "publish" else ""
        return HookCall(
            server="mediamtx",
            kind="publish" if action == "publish" else "other",
            app="",
            name=path,
            client_id=str(data.get("id") or ""),
            args=_query(str(data.get("query") or "")),
            addr=str(data.get("ip") or ""),
            source_type=str(data.get("protocol") or ""),
            ready=False,
        )
    event = _need(data, "event", "mediamtx")
    kinds: dict[str, CallKind] = {"ready": "publish", "not_ready": "publish_done"}
    if event not in kinds:
        raise RequestError("mediamtx hook: event must be 'ready' or 'not_ready'", status=400)
    return HookCall(
        server="mediamtx",
        kind=kinds[event],
        app="",
        name=_need(data, "path", "mediamtx"),
        client_id=str(data.get("source_id") or ""),
        args=_query(str(data.get("query") or "")),
        source_type=str(data.get("source_type") or ""),
        rtsp_port=str(data.get("rtsp_port") or ""),
    )


def parse_srs(data: Mapping[str, Any]) -> HookCall:
    """An SRS ``http_hooks`` callback (JSON)."""
    action = _need(data, "action", "srs")
    kinds: dict[str, CallKind] = {
        "on_publish": "publish",
        "on_unpublish": "publish_done",
        "on_play": "play",
    }
    kind = kinds.get(action, "other")
    if kind == "other":
        return HookCall("srs", "other", str(data.get("app") or ""), "", "")
    return HookCall(
        server="srs",
        kind=kind,
        app=_need(data, "app", "srs"),
        name=_need(data, "stream", "srs"),
        client_id=_need(data, "client_id", "srs"),
        args=_query(str(data.get("param") or "")),
        tcurl=str(data.get("tcUrl") or ""),
        addr=str(data.get("ip") or ""),
    )


_TCURL_SCHEMES = frozenset({"rtmp", "rtmps"})
"""What nginx-rtmp and SRS serve: a ``tcurl`` naming anything else is not theirs."""
_PORT = re.compile(r"[0-9]{1,5}")


def pull_url(call: HookCall, name: str, server_addr: str, template: str | None) -> str:
    """Where the daemon reads the stream ``name`` that ``call`` published.

    The default needs no configuration: nginx-rtmp and SRS tell their own address
    in ``tcurl``; MediaMTX is read over RTSP from the host that sent the hook.
    Whether the daemon may open it is :meth:`PullRules.check`'s to say.
    """
    port = call.rtsp_port or "8554"
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise RequestError(f"{call.server} hook: rtsp_port must be a port number", status=400)
    server = f"[{server_addr}]" if ":" in server_addr else server_addr  # an IPv6 sender
    fields = {
        "tcurl": _strip_query(call.tcurl),
        "app": call.app,
        "name": quote(name, safe=""),
        "server": server,
        "rtsp_port": port,
    }
    if template:
        return template.format(**fields)
    if call.server == "mediamtx":
        return "rtsp://{server}:{rtsp_port}/{name}".format(**fields)
    if not fields["tcurl"]:
        raise RequestError(f"{call.server} hook: field 'tcurl' is missing", status=400)
    return "{tcurl}/{name}".format(**fields)


@dataclass(frozen=True, slots=True)
class PullRules:
    """Where a pull built from a hook may go.

    A hook's ``tcurl`` is whatever the publisher's encoder sent in its RTMP
    ``connect``, so it is input like any other: a pull from it must be RTMP(S),
    and any pull must use a scheme of ``ingest.schemes`` and name the host that sent
    the hook, a configured server, or a host of ``hooks.allow_hosts``. Anything else
    is refused (403) before the daemon opens it.
    """

    schemes: frozenset[str]
    names: frozenset[str] = frozenset()
    """Host names allowed (lower case)."""
    networks: tuple[Network, ...] = ()
    """Addresses allowed, as networks."""

    @staticmethod
    def of(schemes: Sequence[str], hosts: Sequence[str]) -> PullRules:
        """Rules from ``ingest.schemes`` and hosts given as names, addresses or CIDRs."""
        names: set[str] = set()
        networks: list[Network] = []
        for host in hosts:
            try:
                networks.append(ipaddress.ip_network(host.strip("[]"), strict=False))
            except ValueError:
                names.add(host.lower().rstrip("."))
        return PullRules(frozenset(s.lower() for s in schemes), frozenset(names), tuple(networks))

    def check(self, url: str, caller: str, *, from_tcurl: bool) -> None:
        """``RequestError(403)`` unless the daemon may open ``url`` for a hook that
        ``caller`` (the hook request's remote address) sent."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        allowed = self.schemes & _TCURL_SCHEMES if from_tcurl else self.schemes
        if scheme not in allowed:
            raise RequestError(
                f"pull URL scheme {scheme or '(none)'!r} refused; "
                f"allowed: {', '.join(sorted(allowed)) or 'none'}",
                status=403,
            )
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise RequestError("pull URL has no host", status=403)
        if not self.allows_host(host, caller):
            raise RequestError(
                f"pull URL host {host!r} refused: not the hook's sender, a configured "
                "server or in hooks.allow_hosts",
                status=403,
            )

    def allows_host(self, host: str, caller: str) -> bool:
        ip = parse_address(host)
        if ip is None:
            # A name, or a numeric form such as 0x7f000001: only what is listed.
            return host.lower() in self.names
        sender = parse_address(caller)
        if sender is not None and embedded_ipv4(ip) == embedded_ipv4(sender):
            return True
        return in_networks(ip, self.networks)


def from_tcurl(call: HookCall, template: str | None) -> bool:
    """Whether the pull URL's scheme and host come from the publisher's ``tcurl``."""
    if template:
        return "{tcurl}" in template
    return call.server != "mediamtx"


def with_mark(url: str, token: str) -> str:
    """``url`` with the daemon's pull mark added to its query."""
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}{PULL_MARK}={token}"))


def check_template(template: str) -> None:
    """Raise ``ValueError`` naming an unknown field of a pull URL template."""
    for match in re.finditer(r"{([^{}]*)}", template):
        if match.group(1) not in _TEMPLATE_FIELDS:
            raise ValueError(
                f"unknown field {{{match.group(1)}}}; use {', '.join(_TEMPLATE_FIELDS)}"
            )


def _strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment="")).rstrip("/")
