"""Cluster fixtures: a real redis-server per test module (emptied before each test),
and a stack of two real instances on it with nginx-rtmp and a looping ffmpeg publisher."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import DaemonProcess
from tests.nginx import NginxRtmp
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server(redis_module: RedisServer) -> Iterator[RedisServer]:
    if redis_module.proc is None or redis_module.proc.poll() is not None:
        redis_module.start()
    client = redis.Redis.from_url(redis_module.url)
    client.flushall()
    client.close()
    yield redis_module


FAST_ENV = {
    # The known-bad hash is the detector here: fast on a shared CPU, and exact.
    "LIVEMOD_VISION__MODELS": "[]",
    "LIVEMOD_OCR__ENABLED": "false",
    "LIVEMOD_ASR__ENABLED": "false",
}


def instance(
    tmp_path: Path, name: str, known_bad: Path, redis: RedisServer, **env: str
) -> DaemonProcess:
    workdir = tmp_path / name
    workdir.mkdir()
    extra = {
        **FAST_ENV,
        "LIVEMOD_CLUSTER__REDIS_URL": redis.url,
        "LIVEMOD_CLUSTER__INSTANCE_ID": name,
        **env,
    }
    return DaemonProcess(workdir, known_bad, extra_env=extra)


@pytest.fixture
def stack(
    tmp_path: Path, known_bad_dir: Path, violation_clip: Path, redis_server: RedisServer
) -> Iterator[tuple[DaemonProcess, DaemonProcess, NginxRtmp]]:
    nginx = NginxRtmp(tmp_path / "nginx")
    nginx.start()
    publisher = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
         "-i", str(violation_clip), "-c:v", "libx264", "-preset", "ultrafast", "-g", "25",
         "-an", "-f", "flv", nginx.publish_url("room-9", app="plain")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    a = instance(tmp_path, "a", known_bad_dir, redis_server)
    b = instance(tmp_path, "b", known_bad_dir, redis_server)
    try:
        a.start()
        b.start()
        yield a, b, nginx
    finally:
        for d in (a, b):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
        publisher.kill()
        publisher.wait()
        nginx.stop()
