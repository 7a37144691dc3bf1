"""ICE set-up for aiortc peers: which addresses and servers a peer may use.

Two traps this module closes (DESIGN.md, "aiortc on a machine with no internet"):

* ``RTCConfiguration()`` without ``iceServers`` silently adds a public STUN
  server; :func:`rtc_configuration` always passes the configured list, even empty.
* aioice offers every interface address but never 127.0.0.1, and has no option to
  choose. :func:`host_addresses` scopes a choice to the current asyncio context,
  so the daemon can offer exactly ``whip.ice_addresses`` (and a loopback test can
  keep every packet on 127.0.0.1) without changing any other peer in the process.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

_ADDRESSES: ContextVar[tuple[str, ...] | None] = ContextVar("livemod_ice_addresses", default=None)
_original_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    chosen = _ADDRESSES.get()
    if chosen is None:
        return _original_host_addresses(use_ipv4, use_ipv6)
    return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


# aioice looks the function up as a module global at gathering time; the wrapper
# changes nothing unless a caller opted in with ``host_addresses``.
aioice.ice.get_host_addresses = _host_addresses


@contextmanager
def host_addresses(addresses: Sequence[str]) -> Iterator[None]:
    """Within this block, ICE gathering offers only ``addresses`` as host candidates.

    Gathering happens in ``setLocalDescription``: wrap that call. An empty list
    keeps aioice's choice (every interface but loopback).
    """
    token = _ADDRESSES.set(tuple(addresses) if addresses else None)
    try:
        yield
    finally:
        _ADDRESSES.reset(token)


def parse_ice_server(url: str) -> RTCIceServer:
    """``stun:HOST[:PORT]`` or ``turn[s]:[USER:PASSWORD@]HOST[:PORT][?transport=...]``."""
    scheme, _, rest = url.partition(":")
    username = credential = None
    if scheme in ("turn", "turns") and "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        username, _, credential = userinfo.partition(":")
    return RTCIceServer(urls=f"{scheme}:{rest}", username=username, credential=credential)


def rtc_configuration(ice_servers: Sequence[str]) -> RTCConfiguration:
    """An explicit server list, so no default public STUN server sneaks in."""
    return RTCConfiguration(iceServers=[parse_ice_server(u) for u in ice_servers])


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a hostname or an mDNS ``.local`` name
