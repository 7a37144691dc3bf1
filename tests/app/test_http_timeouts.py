"""Slow clients (slowloris): a request head or body that does not arrive within
``http.read_timeout_s`` gets its connection closed; normal requests are unaffected."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TIMEOUT_SCALE, DaemonProcess

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 1.0


@pytest.fixture
def daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    env = {
        "LIVEMOD_HTTP__READ_TIMEOUT_S": str(READ_TIMEOUT_S),
        "LIVEMOD_VISION__MODELS": "[]",
        "LIVEMOD_OCR__ENABLED": "false",
    }
    proc = DaemonProcess(tmp_path, known_bad_dir, extra_env=env)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


def connect(daemon: DaemonProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10 * TIMEOUT_SCALE)
    return sock


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data, time.monotonic() - started


def test_a_stalled_request_line_is_closed(daemon: DaemonProcess) -> None:
    with connect(daemon) as sock:
        sock.sendall(b"GET /heal")
        data, took = read_until_closed(sock)
    assert data == b""
    assert READ_TIMEOUT_S * 0.8 <= took < READ_TIMEOUT_S + 2 * TIMEOUT_SCALE, took


def test_stalled_headers_are_closed_even_while_bytes_trickle(daemon: DaemonProcess) -> None:
    with connect(daemon) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        closed = False
        # One header byte every 0.2 s: each arrives well inside any per-read timeout.
        for _ in range(int(5 * READ_TIMEOUT_S / 0.2)):
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
        if not closed:
            closed = read_until_closed(sock)[0] == b""
        took = time.monotonic() - started
    assert closed and took < READ_TIMEOUT_S + 2 * TIMEOUT_SCALE, took


def test_a_stalled_body_is_answered_408_and_closed(daemon: DaemonProcess) -> None:
    with connect(daemon) as sock:
        sock.sendall(
            b"POST /v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"url": '
        )
        data, took = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"http.read_timeout_s" in data
    assert took < READ_TIMEOUT_S + 2 * TIMEOUT_SCALE, took


def test_normal_requests_still_work_on_a_kept_alive_connection(daemon: DaemonProcess) -> None:
    with connect(daemon) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200 "), head
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += sock.recv(4096)
            time.sleep(READ_TIMEOUT_S / 2)
