"""Which pull targets the daemon may open: files under configured roots, and hosts
that are public or explicitly allowed.

A URL given to ``POST /v1/streams`` (or built from a streaming server's hook) is read
by FFmpeg with the daemon's own network position and file permissions, so a caller
could otherwise make the daemon read ``/etc/shadow`` or its own ``/metrics``. The
rules here are pure but for :func:`find_file` (file system) and :func:`resolve` (DNS),
which say so.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Sequence
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def parse_address(text: str) -> IPAddress | None:
    """An IP literal (URL brackets and an IPv6 zone stripped); ``None`` for a name.

    Only canonical literals: ``127.1`` or ``0x7f000001`` are names here, and
    :func:`resolve` turns them into the address FFmpeg would connect to.
    """
    text = text.strip().removeprefix("[").removesuffix("]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (mapped ``::ffff:a.b.c.d``, 6to4,
    NAT64, the old IPv4-compatible ``::a.b.c.d``); otherwise ``ip`` itself."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _V4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip


def is_internal(ip: IPAddress) -> bool:
    """Whether ``ip`` is not publicly routable: loopback, private, link-local, shared
    (CGNAT), multicast, reserved or unspecified, IPv4 inside IPv6 included."""
    ip = embedded_ipv4(ip)
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def in_networks(ip: IPAddress, networks: Sequence[Network]) -> bool:
    """Whether ``ip`` (or the IPv4 address it stands for) lies in one of ``networks``."""
    forms = {ip, embedded_ipv4(ip)}
    return any(f.version == n.version and f in n for f in forms for n in networks)


def allowed_addresses(addresses: Sequence[IPAddress], allow: Sequence[Network]) -> bool:
    """Whether a host may be pulled from: it resolved, and every address it resolved
    to is public or in ``allow`` (FFmpeg may connect to any of them)."""
    return bool(addresses) and all(not is_internal(a) or in_networks(a, allow) for a in addresses)


async def resolve(host: str, port: int | None, timeout_s: float) -> list[IPAddress]:
    """Every address ``host`` resolves to, as FFmpeg's ``getaddrinfo`` sees them
    (``127.1``, ``0x7f000001`` and ``2130706433`` are 127.0.0.1); empty when it does
    not resolve in time. DNS, off the event loop (asyncio's resolver thread)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, TimeoutError):
        return []
    found = (parse_address(str(info[4][0])) for info in infos)
    return [ip for ip in found if ip is not None]


def find_file(path: str, roots: Sequence[Path]) -> Path | None:
    """The real path of ``path`` when it is a regular file inside one of ``roots``
    (symlinks and ``..`` resolved first, so neither leads out); ``None`` otherwise,
    whatever the reason, so the answer does not tell what exists elsewhere.
    Touches the file system."""
    if not roots or not os.path.isabs(path):
        return None
    try:
        real = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        return None
    for root in roots:
        try:
            inside = real.is_relative_to(root.resolve(strict=True))
        except (OSError, RuntimeError):
            continue
        if inside and real.is_file():
            return real
    return None
