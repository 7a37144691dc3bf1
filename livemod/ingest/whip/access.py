"""Who may publish over WHIP, as whom, and when: pure rules, no I/O.

* Bearer tokens: ``http.token`` is an admin (any user, named by ``?user_id=``);
  a token in ``whip.tokens`` is one publisher, whose user id it fixes. With
  neither configured (the loopback default) anyone may publish as ``?user_id=``.
* After an ``end`` was enforced on a publish, the same user is refused in that
  room for ``enforce.end_refuse_s``: encoders reconnect by themselves.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from livemod.errors import RequestError
from livemod.ingest.whip.ice import parse_ice_server
from livemod.web import ID_RULE, is_id


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: ``user_id`` is set for a publisher's own token, ``None``
    for an admin (or when the daemon has no tokens)."""

    user_id: str | None


def authorize(header: str, admin_token: str | None, tokens: Mapping[str, str]) -> Caller:
    """Check an ``Authorization`` header; raises ``RequestError`` (401)."""
    if not admin_token and not tokens:
        return Caller(None)
    if not header.startswith("Bearer "):
        raise RequestError("missing bearer token: send Authorization: Bearer <token>", status=401)
    given = header[len("Bearer ") :].strip().encode()
    if admin_token and hmac.compare_digest(given, admin_token.encode()):
        return Caller(None)
    for token, user_id in tokens.items():
        if hmac.compare_digest(given, token.encode()):
            return Caller(user_id)
    raise RequestError("wrong bearer token", status=401)


def publisher_user(caller: Caller, asked: str | None) -> str:
    """The user id of a new publish, from the token or ``?user_id=``."""
    if caller.user_id is not None:
        if asked is not None and asked != caller.user_id:
            raise RequestError("user_id does not match the bearer token's user", status=403)
        return caller.user_id
    if asked is None or not is_id(asked):
        raise RequestError(
            f"user_id: add ?user_id=... to the WHIP URL ({ID_RULE}), "
            "or map the publisher's bearer token to a user in whip.tokens",
            status=422,
        )
    return asked


def check_room(room_id: str) -> str:
    if not is_id(room_id):
        raise RequestError(f"room_id: {ID_RULE}", status=422)
    return room_id


class EndRefusals:
    """``userId:roomId`` keys refused for a while after an enforced ``end``."""

    def __init__(self, refuse_s: float) -> None:
        self._refuse_s = refuse_s
        self._ended: dict[str, tuple[float, str]] = {}

    def remember(self, key: str, category: str, now: float) -> None:
        # Lapsed entries go first, so the table is only as large as the live refusals.
        for old in [k for k, (at, _) in self._ended.items() if now - at >= self._refuse_s]:
            del self._ended[old]
        self._ended[key] = (now, category)

    def check(self, key: str, now: float) -> None:
        """Raise ``RequestError`` (403) while ``key`` is refused."""
        ended = self._ended.get(key)
        if ended is None:
            return
        if now - ended[0] >= self._refuse_s:
            del self._ended[key]
            return
        raise RequestError(
            f"publishing here was ended by moderation ({ended[1]}); "
            f"refused for {self._refuse_s:g} s (enforce.end_refuse_s)",
            status=403,
        )


def ice_links(ice_servers: list[str]) -> list[str]:
    """``Link`` header values advertising the configured STUN/TURN servers (RFC 9725 4.4)."""
    links = []
    for url in ice_servers:
        server = parse_ice_server(url)
        link = f'<{server.urls}>; rel="ice-server"'
        if server.username is not None:
            link += (
                f'; username="{server.username}"; credential="{server.credential}"'
                '; credential-type="password"'
            )
        links.append(link)
    return links


ALLOWED_METHODS = ("POST", "PATCH", "DELETE", "OPTIONS")
REQUEST_HEADERS = ("Authorization", "Content-Type", "If-Match", "ETag")
"""Request headers WHIP clients send. ``ETag``: some clients (``@eyevinn/whip-web-client``)
send the session's entity tag under the response header's name instead of ``If-Match``."""
EXPOSED_HEADERS = (
    "Location",
    "ETag",
    "Link",
    "Accept-Post",
    "Accept-Patch",
    "Allow",
    "Access-Control-Allow-Methods",
    "WWW-Authenticate",
)
"""Response headers a page's script may read cross-origin. Clients decide whether to
trickle from ``Accept-Patch`` or from the methods their ``OPTIONS`` answer allows:
unreadable, they wait for complete ICE gathering (seconds) before the offer."""
PREFLIGHT_MAX_AGE_S = 600
"""How long a browser may reuse a preflight (Chromium caps it at 7200 s)."""


def cors_headers(origin: str) -> dict[str, str]:
    """The CORS headers every WHIP answer carries, preflights included."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ", ".join(ALLOWED_METHODS),
        "Access-Control-Allow-Headers": ", ".join(REQUEST_HEADERS),
        "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
    }


def request_etag(headers: Mapping[str, str]) -> str | None:
    """The entity tag a ``PATCH`` names: ``If-Match`` (RFC 9725), else an ``ETag``
    request header, which some clients send instead."""
    for name in ("If-Match", "ETag"):
        value = headers.get(name)
        if value is not None and value.strip():
            return value.strip()
    return None


def etag_matches(given: str, etag: str) -> bool:
    """Whether ``given`` (one tag or a comma-separated list) names ``etag``.

    Quotes are optional: a client that dropped them still means this session.
    """
    wanted = etag.strip('"')
    return any(tag.strip().strip('"') == wanted for tag in given.split(","))
