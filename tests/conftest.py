"""Shared fixtures: generated media and a real daemon process on loopback."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import jsonschema
import pytest

from livemod.testing import media as testmedia

ROOT = Path(__file__).resolve().parents[1]
EVENT_SCHEMA = json.loads((ROOT / "docs" / "events.schema.json").read_text())
EVENT_VALIDATOR = jsonschema.Draft202012Validator(EVENT_SCHEMA)

TIMEOUT_SCALE = float(os.environ.get("LIVEMOD_TEST_TIMEOUT_SCALE", "1"))
"""Multiply every test timeout by this on a slow machine."""

BAD_START, BAD_END = 5.0, 8.0


def loopback_only() -> bool:
    """Whether this network namespace has no interface but ``lo``."""
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def known_bad_dir(media_dir: Path) -> Path:
    folder = media_dir / "known_bad"
    folder.mkdir(exist_ok=True)
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    cv2.imwrite(str(folder / "bad.png"), bad[:, :, ::-1])
    return folder


@pytest.fixture(scope="session")
def violation_clip(media_dir: Path) -> Path:
    """14 s: benign pattern and photos, the known-bad picture from 5 s to 8 s."""
    clip = media_dir / "violation.mp4"
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    testmedia.make_clip(
        clip,
        [
            testmedia.Segment(3.0, None),
            testmedia.Segment(2.0, testmedia.photo("astronaut")),
            testmedia.Segment(BAD_END - BAD_START, bad),
            testmedia.Segment(3.0, testmedia.photo("coffee")),
            testmedia.Segment(3.0, None),
        ],
    )
    return clip


@pytest.fixture(scope="session")
def benign_clip(media_dir: Path) -> Path:
    clip = media_dir / "benign.mp4"
    testmedia.make_clip(
        clip,
        [
            testmedia.Segment(2.0, None),
            testmedia.Segment(2.0, testmedia.photo("chelsea")),
            testmedia.Segment(2.0, None),
        ],
    )
    return clip


TEST_INGEST_ENV = {
    "LIVEMOD_INGEST__ALLOW_HOSTS": json.dumps(["127.0.0.0/8", "::1/128"]),
}
"""What the suite's daemons may pull from besides public hosts: its loopback servers
(nginx-rtmp, the test HTTP servers). Files: see ``DaemonProcess.env``."""
NO_SPEECH_ENV = {"LIVEMOD_ASR__ENABLED": "false"}
"""Speech is on by default; a daemon that does not test it need not load Whisper and
the text judge (3 s more per start on the shared 2-core machine). The speech tests turn
it back on in ``extra_env``."""


@dataclass
class DaemonProcess:
    """``livemod serve`` as a real subprocess, with its own store and ports.

    Unlike the embedded defaults, it may read files under the workdir's parent (the
    test session's temporary folder, where the generated media lie) and pull from
    loopback (:data:`TEST_INGEST_ENV`); ``extra_env`` may take either back.
    """

    workdir: Path
    known_bad: Path
    http_port: int = field(default_factory=free_port)
    ws_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v1/events"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "LIVEMOD_KNOWN_BAD__PATHS": json.dumps([str(self.known_bad)]),
                "LIVEMOD_STORE__PATH": str(self.workdir / "livemod.db"),
                "LIVEMOD_HTTP__PORT": str(self.http_port),
                "LIVEMOD_WEBSOCKET__PORT": str(self.ws_port),
                "LIVEMOD_INGEST__FILE_ROOTS": json.dumps([str(self.workdir.parent)]),
                **TEST_INGEST_ENV,
                **NO_SPEECH_ENV,
                **self.extra_env,
            }
        )
        return env

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.workdir / "daemon.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "livemod", "serve"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daemon not healthy in time: {self.log()}")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        path = self.workdir / "daemon.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path, known_bad_dir)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.stop()


@pytest.fixture
def fresh_escalation_metrics() -> Iterator[None]:
    """Escalation counters are process-wide: leave them as found (zero), since other
    tests read the declared label sets at their initial values."""
    from livemod import metrics

    yield
    for counter, labels in (
        (metrics.ESCALATIONS, metrics.ESCALATION_OUTCOMES),
        (metrics.ESCALATION_FALLBACKS, metrics.FALLBACK_MODES),
    ):
        counter.clear()
        for label in labels:
            counter.labels(label)
    metrics.set_breaker_state("closed")


_STORES_SEEN: dict[Path, int] = {}
"""Per store file under the test session's temporary folder: the last seq validated."""
EVENTS_VALIDATED = [0]


def invalid_events(db: Path, after: int) -> tuple[int, list[str]]:
    """Validate a store's events past ``after`` against docs/events.schema.json:
    the last seq read and one message per invalid event."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return after, []
    try:
        rows = con.execute(
            "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq", (after,)
        ).fetchall()
    except sqlite3.Error:  # not a livemod store, or none yet
        return after, []
    finally:
        con.close()
    problems = []
    for seq, body in rows:
        event = json.loads(body)
        errors = sorted(EVENT_VALIDATOR.iter_errors(event), key=lambda e: list(e.path))
        if errors:
            best = jsonschema.exceptions.best_match(errors)
            problems.append(f"{db.name} seq {seq} ({event.get('type')}): {best.message}")
        after = seq
    EVENTS_VALIDATED[0] += len(rows)
    return after, problems


@pytest.fixture(autouse=True)
def events_match_the_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every event any daemon of the suite committed validates against the published
    schema: after each test, the new events of every store under the session's
    temporary folder are read back and checked."""
    yield
    problems: list[str] = []
    for db in tmp_path_factory.getbasetemp().rglob("*.db"):
        _STORES_SEEN[db], found = invalid_events(db, _STORES_SEEN.get(db, 0))
        problems.extend(found)
    if problems:
        pytest.fail("events that do not match docs/events.schema.json:\n" + "\n".join(problems))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(
        f"events validated against docs/events.schema.json: {EVENTS_VALIDATED[0]}"
    )
