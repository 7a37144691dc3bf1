"""Which pull targets the daemon may open: internal addresses in every spelling, files
under roots (symlinks and ``..`` resolved), and resolution as FFmpeg resolves."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from livemod.ingest.targets import (
    allowed_addresses,
    embedded_ipv4,
    find_file,
    in_networks,
    is_internal,
    parse_address,
    resolve,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.255.0.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1",
        "fc00::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "::127.0.0.1", "2002:7f00:1::",
        "64:ff9b::a00:1",
    ],
)  # fmt: skip
def test_internal_addresses_in_every_form(address: str) -> None:
    ip = parse_address(address)
    assert ip is not None and is_internal(ip)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses(address: str) -> None:
    ip = parse_address(address)
    assert ip is not None and not is_internal(ip)


def test_address_parsing_and_networks() -> None:
    assert parse_address("[::1]") == ipaddress.ip_address("::1")
    assert parse_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_address("0x7f000001") is None  # a name here; resolve() reads it
    assert embedded_ipv4(ipaddress.ip_address("::ffff:10.0.0.1")) == ipaddress.ip_address(
        "10.0.0.1"
    )
    lan = (ipaddress.ip_network("10.0.0.0/8"),)
    mapped = ipaddress.ip_address("::ffff:10.9.9.9")
    assert in_networks(mapped, lan)
    assert allowed_addresses([mapped, ipaddress.ip_address("8.8.8.8")], lan)
    assert not allowed_addresses([ipaddress.ip_address("127.0.0.1")], lan)
    assert not allowed_addresses([], lan)  # did not resolve: refused


@pytest.mark.parametrize("host", ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "localhost"])
async def test_numeric_and_named_forms_resolve_as_ffmpeg_sees_them(host: str) -> None:
    addresses = await resolve(host, 80, timeout_s=5.0)
    assert addresses and all(is_internal(a) for a in addresses)


def test_files_only_inside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    clip = root / "clip.mp4"
    clip.write_bytes(b"x")
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    (root / "link.mp4").symlink_to(outside)
    (root / "inner-link.mp4").symlink_to(clip)
    os.mkfifo(root / "fifo")

    assert find_file(str(clip), [root]) == clip
    assert find_file(f"{root}/sub/../clip.mp4", [root]) == clip
    assert find_file(str(root / "inner-link.mp4"), [root]) == clip
    for path in (
        str(outside),
        f"{root}/../outside.mp4",
        str(root / "link.mp4"),  # a symlink out of the root
        str(root / "missing.mp4"),
        str(root / "fifo"),  # not a regular file: FFmpeg would block on it
        str(root),
        "media/clip.mp4",  # relative
        "/etc/passwd",
        "/proc/self/environ",
        "/tmp/\0x",
    ):
        assert find_file(path, [root]) is None, path
    assert find_file(str(clip), []) is None  # no roots: no files
