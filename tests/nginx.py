"""A real nginx with the RTMP module on 127.0.0.1, for tests and benchmarks.

Each server gets its own prefix, pid, log and temp folders under a temporary
directory and free loopback ports; it runs in the foreground as a subprocess
(``daemon off``, no master process, so there is no worker to chown folders for)
and is stopped by its own pid. ``restart`` keeps the ports, as an operator's
restart would.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
NGINX = "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_config(
    prefix: Path,
    *,
    rtmp_port: int,
    http_port: int,
    hook_url: str | None,
    app: str = "live",
) -> str:
    """An nginx.conf like configs/nginx-rtmp.conf, on the given ports and folders."""
    hooks = ""
    if hook_url is not None:
        hooks = (
            f"            on_publish {hook_url};\n"
            f"            on_publish_done {hook_url};\n"
            f"            on_play {hook_url};\n"
        )
    return f"""\
load_module {RTMP_MODULE};
worker_processes 1;
master_process off;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 256;
}}
rtmp {{
    server {{
        listen 127.0.0.1:{rtmp_port};
        chunk_size 4096;
        notify_method post;
        application {app} {{
            live on;
            record off;
{hooks}        }}
        # No hooks: stands in for a server that calls the daemon some other way.
        application plain {{
            live on;
            record off;
        }}
        # The moderated relay's output (docs/relay.md): what viewers play.
        application safe {{
            live on;
            record off;
        }}
    }}
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{http_port};
        location /control {{
            rtmp_control all;
        }}
        location /stat {{
            rtmp_stat all;
        }}
    }}
}}
"""


def from_example(example: Path, *, rtmp_port: int, http_port: int, hook_url: str) -> str:
    """The shipped example config on test ports (it must still contain its defaults)."""
    text = example.read_text()
    for old, new in (
        ("listen 1935;", f"listen 127.0.0.1:{rtmp_port};"),
        ("listen 127.0.0.1:8081;", f"listen 127.0.0.1:{http_port};"),
        ("http://127.0.0.1:8080/hooks/nginx-rtmp", hook_url),
    ):
        if old not in text:
            raise ValueError(f"{example} no longer contains {old!r}")
        text = text.replace(old, new)
    return text


@dataclass
class NginxRtmp:
    """One nginx-rtmp server. ``start``, ``stop``, ``restart``; ports stay fixed."""

    prefix: Path
    hook_url: str | None = None
    app: str = "live"
    example: Path | None = None
    """Run this shipped config (ports and hook URL replaced) instead of the test one."""
    rtmp_port: int = field(default_factory=_free_port)
    http_port: int = field(default_factory=_free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/control"

    def publish_url(self, room: str, query: str = "", app: str | None = None) -> str:
        url = f"rtmp://127.0.0.1:{self.rtmp_port}/{app or self.app}/{room}"
        return f"{url}?{query}" if query else url

    def start(self, timeout: float = 10.0) -> None:
        self.prefix.mkdir(parents=True, exist_ok=True)
        extra: list[str] = []
        if self.example is not None:
            assert self.hook_url is not None
            text = from_example(
                self.example,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                hook_url=self.hook_url,
            )
            extra = ["-g", "daemon off; master_process off;"]
        else:
            text = render_config(
                self.prefix,
                rtmp_port=self.rtmp_port,
                http_port=self.http_port,
                hook_url=self.hook_url,
                app=self.app,
            )
        self.conf.write_text(text)
        log = open(self.prefix / "stderr.log", "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.conf), "-e", "stderr", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: {self.log()}")
            if _listening(self.rtmp_port) and _listening(self.http_port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen in time: {self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """Stop at once (SIGKILL): no hook is sent, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def publishers(self) -> list[str]:
        """Names of the streams that have a publisher now (from rtmp_stat)."""
        url = f"http://127.0.0.1:{self.http_port}/stat"
        with urllib.request.urlopen(url, timeout=5) as resp:
            root = ET.fromstring(resp.read())
        names: list[str] = []
        for stream in root.iter("stream"):
            name = stream.findtext("name") or ""
            if any(c.find("publishing") is not None for c in stream.iter("client")):
                names.append(name)
        return names

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
