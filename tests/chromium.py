"""Headless Chromium (Debian's ``chromium``) on loopback, driven over the DevTools
protocol's WebSocket, for browser publisher tests.

Everything stays on 127.0.0.1: WebRTC may use the loopback interface and does not
hide host addresses behind mDNS names, every other request goes to a dead
loopback proxy, and host names do not resolve. The page under test further keeps
only 127.0.0.1 candidates in its offer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websockets

from tests.conftest import TIMEOUT_SCALE

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    # WebRTC offers the loopback interface only with this switch and to a page that
    # holds a media permission: the fake camera grants one without a prompt.
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


class Chromium:
    """One browser process with a fresh profile; ``page`` gives its first tab."""

    def __init__(self, workdir: Path) -> None:
        self.profile = workdir / "chromium-profile"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Launch and wait for the DevTools port (blocking, a second or so)."""
        self.profile.mkdir(parents=True, exist_ok=True)
        log = open(self.profile.parent / "chromium.log", "wb")  # noqa: SIM115 - lives with it
        self.proc = subprocess.Popen(
            ["chromium", *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helper processes go with it in stop()
        )
        port_file = self.profile / "DevToolsActivePort"
        for _ in range(int(timeout * TIMEOUT_SCALE / 0.1)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited {self.proc.returncode}")
            try:
                self.port = int(port_file.read_text().split()[0])
                return
            except (OSError, ValueError, IndexError):
                time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port in time")

    def page_ws_url(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as r:
            targets = json.load(r)
        return str(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Page:
    """A DevTools session on one tab: navigate, evaluate JavaScript."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self._ids)
        await self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await self._ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` (awaited when it is a promise); JS errors raise."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JavaScript error: {text}")
        return result["result"].get("value")

    async def goto(self, url: str, ready: str, timeout: float = 20.0) -> None:
        """Load ``url`` and wait until the expression ``ready`` is true."""
        await self.call("Page.navigate", url=url)
        for _ in range(int(timeout * TIMEOUT_SCALE / 0.1)):
            if await self.evaluate(f"document.readyState === 'complete' && !!({ready})"):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{url} did not get ready in time")


async def open_page(browser: Chromium) -> tuple[Page, Any]:
    """A page session and its WebSocket (close it when done)."""
    ws = await websockets.connect(browser.page_ws_url(), max_size=None)
    return Page(ws), ws
