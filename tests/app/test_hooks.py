"""The pure parts of streaming-server ingest: hook parsing, identity and stream keys,
the room table's admissions, the enforcers' HTTP calls, and the reconnecting pull.

The nginx-rtmp form below is what nginx-rtmp 1.2 (Debian's libnginx-mod-rtmp) sent
in this repository's experiments; MediaMTX and SRS bodies follow their documented
formats. The enforcers talk to an HTTP server on loopback that answers the way the
servers' control APIs do (MediaMTX and SRS do not install from Debian or PyPI).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from livemod.actions.enforcers import build_enforcers
from livemod.app.hooks import StreamingServerHooks, pull_rules
from livemod.errors import ConfigError, RequestError
from livemod.ingest.av_source import SourceOptions
from livemod.ingest.hooks import (
    HookCall,
    Identity,
    IdentityRules,
    PullRules,
    check_template,
    from_tcurl,
    parse_mediamtx,
    parse_nginx,
    parse_srs,
    pull_url,
    signed_key,
    with_mark,
)
from livemod.ingest.reconnect import PullControl, ReconnectingSource
from livemod.ingest.rooms import Publisher, RoomTable
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler
from livemod.testing import media as testmedia

NGINX_PUBLISH = {
    "app": "live",
    "flashver": "FMLE/3.0 (compatible; Lavf59.27",
    "swfurl": "",
    "tcurl": "rtmp://127.0.0.1:40635/live",
    "pageurl": "",
    "addr": "127.0.0.1",
    "clientid": "3",
    "call": "publish",
    "name": "room1",
    "type": "live",
    "user_id": "alice",
    "key": "s3",
}


def test_nginx_publish_is_parsed_with_its_query_args() -> None:
    call = parse_nginx(NGINX_PUBLISH)
    assert (call.server, call.kind, call.app, call.name, call.client_id) == (
        "nginx-rtmp", "publish", "live", "room1", "3",
    )  # fmt: skip
    assert call.args == {"user_id": "alice", "key": "s3"}
    done = parse_nginx({**NGINX_PUBLISH, "call": "publish_done"})
    assert done.kind == "publish_done"
    assert parse_nginx({**NGINX_PUBLISH, "call": "play"}).kind == "play"
    assert parse_nginx({**NGINX_PUBLISH, "call": "record_done"}).kind == "other"


@pytest.mark.parametrize("missing", ["call", "app", "name", "clientid"])
def test_nginx_hook_without_a_field_names_it(missing: str) -> None:
    form = {k: v for k, v in NGINX_PUBLISH.items() if k != missing}
    with pytest.raises(RequestError) as err:
        parse_nginx(form)
    assert err.value.status == 400 and f"'{missing}'" in str(err.value)


def test_mediamtx_auth_and_ready_calls() -> None:
    auth = parse_mediamtx(
        {"user": "", "password": "", "ip": "10.0.0.9", "action": "publish", "path": "cam/7",
         "protocol": "rtmp", "id": "9a1f", "query": "user_id=ann&key=k"}
    )  # fmt: skip
    assert (auth.kind, auth.name, auth.ready, auth.source_type) == (
        "publish",
        "cam/7",
        False,
        "rtmp",
    )
    assert auth.args == {"user_id": "ann", "key": "k"}
    assert parse_mediamtx({"action": "read", "path": "cam/7"}).kind == "other"
    ready = parse_mediamtx(
        {"event": "ready", "path": "cam/7", "query": "user_id=ann", "source_type": "rtmpConn",
         "source_id": "c0ffee", "rtsp_port": "8554"}
    )  # fmt: skip
    assert (ready.kind, ready.client_id, ready.ready) == ("publish", "c0ffee", True)
    assert parse_mediamtx({"event": "not_ready", "path": "cam/7"}).kind == "publish_done"
    with pytest.raises(RequestError, match="'ready' or 'not_ready'"):
        parse_mediamtx({"event": "gone", "path": "cam/7"})


def test_srs_hooks() -> None:
    body = {
        "server_id": "vid-1", "action": "on_publish", "client_id": 1985, "ip": "10.0.0.2",
        "vhost": "__defaultVhost__", "app": "live", "tcUrl": "rtmp://10.0.0.1:1935/live",
        "stream": "show", "param": "?user_id=bo&key=z",
    }  # fmt: skip
    call = parse_srs(body)
    assert (call.kind, call.client_id, call.name, call.args["user_id"]) == (
        "publish", "1985", "show", "bo",
    )  # fmt: skip
    assert parse_srs({**body, "action": "on_unpublish"}).kind == "publish_done"
    assert parse_srs({"action": "on_connect", "app": "live"}).kind == "other"
    with pytest.raises(RequestError, match="'stream'"):
        parse_srs({k: v for k, v in body.items() if k != "stream"})


def test_identity_rules_and_stream_keys() -> None:
    call = parse_nginx(NGINX_PUBLISH)
    assert IdentityRules().identify(call) == Identity("alice", "room1")
    by_arg = IdentityRules(room_arg="room", user_arg="uid", default_user_id="guest")
    routed = parse_nginx({**NGINX_PUBLISH, "room": "lobby"})
    assert by_arg.identify(routed) == Identity("guest", "lobby")
    for form, needle in (
        ({k: v for k, v in NGINX_PUBLISH.items() if k != "user_id"}, "'user_id'"),
        ({**NGINX_PUBLISH, "user_id": "a b"}, "user id must be"),
    ):
        with pytest.raises(RequestError, match=needle) as err:
            IdentityRules().identify(parse_nginx(form))
        assert err.value.status == 403

    who = Identity("alice", "room1")
    shared = IdentityRules(key_check="shared", secret="s3")
    shared.check_key(call, who)
    with pytest.raises(RequestError, match="stream key"):
        shared.check_key(parse_nginx({**NGINX_PUBLISH, "key": "s4"}), who)
    signed = IdentityRules(key_check="signed", secret="platform-secret")
    good = parse_nginx({**NGINX_PUBLISH, "key": signed_key("platform-secret", who)})
    signed.check_key(good, who)
    with pytest.raises(RequestError):  # a key minted for another room does not open this one
        signed.check_key(good, Identity("alice", "room2"))
    with pytest.raises(RequestError, match="secret is empty"):
        IdentityRules(key_check="shared").check_key(call, who)


def test_pull_urls() -> None:
    call = parse_nginx({**NGINX_PUBLISH, "tcurl": "rtmp://10.1.2.3:1935/live?vhost=x"})
    assert pull_url(call, "room1", "10.9.9.9", None) == "rtmp://10.1.2.3:1935/live/room1"
    assert pull_url(call, "r", "", "rtmp://edge:1935/{app}/{name}") == "rtmp://edge:1935/live/r"
    mtx = parse_mediamtx({"event": "ready", "path": "cam", "rtsp_port": "8555"})
    assert pull_url(mtx, "cam", "10.0.0.5", None) == "rtsp://10.0.0.5:8555/cam"
    marked = with_mark("rtmp://h/live/r?a=1", "tok")
    assert marked == "rtmp://h/live/r?a=1&livemod_pull=tok"
    check_template("rtmp://{server}/{app}/{name}")
    with pytest.raises(ValueError, match="unknown field"):
        check_template("rtmp://{host}/{name}")


RTMP_ONLY = ["rtmp", "rtmps", "rtsp", "http", "https", "file"]


def _checked(call: HookCall, caller: str, rules: PullRules, template: str | None = None) -> str:
    """The pull URL as the pull manager builds it: derived, then checked."""
    url = pull_url(call, call.name, caller, template)
    rules.check(url, caller, from_tcurl=from_tcurl(call, template))
    return url


@pytest.mark.parametrize(
    "tcurl",
    [
        "gopher://127.0.0.1:70/live",
        "tcp://127.0.0.1:8080",
        "file:///etc",
        "http://127.0.0.1:8080/metrics",
        "https://127.0.0.1/live",
        "rtsp://127.0.0.1/live",
        "rtmp://10.0.0.9:1935/live",  # not the sender
        "rtmp://0x7f000001:1935/live",  # a numeric form is a name: not listed
        "rtmp://2130706433/live",
        "rtmp://localhost:1935/live",
        "rtmp:///live",
    ],
)
def test_a_tcurl_outside_the_rules_is_refused_before_any_pull(tcurl: str) -> None:
    rules = PullRules.of(RTMP_ONLY, [])
    call = parse_nginx({**NGINX_PUBLISH, "tcurl": tcurl})
    with pytest.raises(RequestError) as err:
        _checked(call, "127.0.0.1", rules)
    assert err.value.status == 403 and "pull URL" in str(err.value)


def test_pull_rules_allow_the_sender_the_configured_servers_and_the_list() -> None:
    rules = PullRules.of(RTMP_ONLY, ["stream.example.org", "10.1.0.0/16"])
    own = parse_nginx(NGINX_PUBLISH)  # rtmp://127.0.0.1:40635/live, sent from 127.0.0.1
    assert _checked(own, "127.0.0.1", rules) == "rtmp://127.0.0.1:40635/live/room1"
    assert _checked(own, "::ffff:127.0.0.1", rules)  # the sender, as a dual-stack socket sees it
    with pytest.raises(RequestError, match="not the hook's sender"):
        _checked(own, "127.0.0.2", rules)
    for tcurl in ("rtmp://Stream.Example.org/live", "rtmps://10.1.2.3:443/live"):
        _checked(parse_nginx({**NGINX_PUBLISH, "tcurl": tcurl}), "192.0.2.7", rules)
    # MediaMTX is pulled from its sender over RTSP; an IPv6 sender gets brackets.
    mtx = parse_mediamtx({"event": "ready", "path": "cam", "rtsp_port": "8555"})
    assert _checked(mtx, "::1", rules) == "rtsp://[::1]:8555/cam"
    with pytest.raises(RequestError, match="rtsp_port"):
        odd_port = parse_mediamtx({"event": "ready", "path": "c", "rtsp_port": "1@x"})
        pull_url(odd_port, "c", "h", None)
    # A scheme the daemon does not open is refused even from an operator's template.
    with pytest.raises(RequestError, match="scheme 'srt'"):
        _checked(mtx, "10.1.0.5", rules, template="srt://{server}:9000/{name}")
    # A template taking the scheme and host from tcurl is held to tcurl's rules.
    bad = parse_nginx({**NGINX_PUBLISH, "tcurl": "http://127.0.0.1:8080"})
    with pytest.raises(RequestError, match="scheme 'http'"):
        _checked(bad, "127.0.0.1", rules, template="{tcurl}/{name}")


def test_configured_servers_are_allowed_pull_hosts() -> None:
    from livemod.config import load_config

    config = load_config(
        None,
        environ={
            "LIVEMOD_ENFORCE__NGINX_CONTROL_URL": "http://rtmp-1.internal:8081/control",
            "LIVEMOD_HOOKS__ALLOW_HOSTS": "[edge.example.net, 198.51.100.0/24]",
        },
    )
    rules = pull_rules(config)
    for host in ("rtmp-1.internal", "edge.example.net", "198.51.100.20"):
        call = parse_nginx({**NGINX_PUBLISH, "tcurl": f"rtmp://{host}:1935/live"})
        _checked(call, "10.9.9.9", rules)
    with pytest.raises(ConfigError, match=r"hooks\.allow_hosts"):
        load_config(None, environ={"LIVEMOD_HOOKS__ALLOW_HOSTS": "['not a host']"})


@pytest.mark.parametrize(
    "form",
    [
        {**NGINX_PUBLISH, "name": "room1\n"},
        {**NGINX_PUBLISH, "user_id": "alice\n"},
        {**NGINX_PUBLISH, "user_id": "alice\r\nX: y"},
    ],
)
def test_ids_with_a_trailing_newline_are_refused(form: dict[str, str]) -> None:
    with pytest.raises(RequestError) as err:
        IdentityRules().identify(parse_nginx(form))
    assert err.value.status == 403
    mtx = parse_mediamtx({"event": "ready", "path": "cam7\n", "query": "user_id=ann"})
    with pytest.raises(RequestError):
        IdentityRules().identify(mtx)


def test_a_bad_pull_template_stops_start_up() -> None:
    from livemod.config import load_config

    config = load_config(None, environ={"LIVEMOD_HOOKS__PULL_URL": "rtmp://{host}/x"})
    with pytest.raises(ConfigError, match=r"hooks\.pull_url"):
        StreamingServerHooks(config)


def _event(action: str, state: str, room: str = "room1", **extra: Any) -> dict[str, Any]:
    return {"type": "action", "action": action, "state": state, "room_id": room,
            "user_id": "alice", "category": "known_bad", "stream_id": "s1", **extra}  # fmt: skip


def test_room_table_refuses_during_an_end_then_lifts_it() -> None:
    rooms = RoomTable(end_refuse_s=60.0, pause_stream="{name}__held")
    call = parse_nginx(NGINX_PUBLISH)
    who = Identity("alice", "room1")
    assert rooms.admit(call, who, 0.0).status == 200
    hold = rooms.on_action(_event("end", "start"), now=100.0)
    assert hold is not None and hold.key == "alice:room1"
    assert rooms.admit(call, Identity("mallory", "room1"), 130.0).status == 403  # any user
    assert rooms.admit(call, Identity("alice", "other"), 130.0).status == 200  # other rooms
    lapsed = rooms.admit(call, who, 161.0)
    assert lapsed.status == 200 and lapsed.lifted == (hold,)
    assert rooms.admit(call, who, 162.0).lifted == ()
    assert rooms.on_action(_event("warn", "start"), now=1.0) is None


def test_room_table_holds_a_paused_publisher_and_follows_redirects() -> None:
    rooms = RoomTable(end_refuse_s=60.0, pause_stream="{name}__held")
    call = parse_nginx(NGINX_PUBLISH)
    who = Identity("alice", "room1")
    rooms.on_action(_event("pause", "start"), now=0.0)
    adm = rooms.admit(call, who, 1.0)
    assert (adm.status, adm.redirect_to) == (302, "room1__held")
    srs = parse_srs({"action": "on_publish", "client_id": 1, "app": "live", "stream": "room1"})
    assert rooms.admit(srs, who, 1.0).status == 200  # SRS cannot hold: moderation goes on
    pub = rooms.register(call, who, "room1__held")
    assert pub.held and rooms.by_session("x") is None
    rooms.on_action(_event("pause", "stop"), now=2.0)
    assert not rooms.held("room1", "pause")

    # Resume: our redirect's publish_done and publish are recognised, no args needed.
    rooms.expect_move(pub, "room1")
    bare = {k: v for k, v in NGINX_PUBLISH.items() if k not in ("user_id", "key")}
    done, ours = rooms.publish_done(parse_nginx({**bare, "call": "publish_done"}))
    assert done is pub and ours
    moved = rooms.admit(parse_nginx(bare), None, 3.0)
    assert moved.moved is pub and pub.stream_name == "room1" and not pub.held
    # A stranger's publish without identity is refused.
    assert rooms.admit(parse_nginx({**bare, "clientid": "9"}), None, 3.0).status == 403
    done, ours = rooms.publish_done(parse_nginx({**bare, "call": "publish_done"}))
    assert done is pub and not ours and rooms.publishers == {}


@pytest.fixture
async def fake_apis() -> AsyncIterator[tuple[str, list[str], dict[str, Any]]]:
    """One loopback server answering as nginx-rtmp control, MediaMTX and SRS do."""
    seen: list[str] = []
    answers: dict[str, Any] = {"count": "1", "srs": {"code": 0}, "mtx": 200}

    async def handle(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path_qs}")
        if request.path.startswith("/control/"):
            return web.Response(text=answers["count"])
        if request.path.startswith("/v3/"):
            status = answers["mtx"]
            return web.json_response({"error": "connection not found"} if status != 200 else {},
                                     status=status)  # fmt: skip
        return web.json_response(answers["srs"])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen, answers
    finally:
        await runner.cleanup()


def _pub(call: HookCall, stream: str = "") -> Publisher:
    return Publisher(call.server, call.app, call.name, Identity("a", "r"), call.client_id, call,
                     stream)  # fmt: skip


async def test_enforcers_speak_each_servers_api(
    fake_apis: tuple[str, list[str], dict[str, Any]],
) -> None:
    base, seen, answers = fake_apis
    async with aiohttp.ClientSession() as http:
        enforcers = build_enforcers(
            nginx_control_url=f"{base}/control",
            mediamtx_api_url=base,
            srs_api_url=base,
            http=http,
        )
        nginx = _pub(parse_nginx(NGINX_PUBLISH))
        dropped = await enforcers["nginx-rtmp"].drop(nginx)
        assert dropped.ok and dropped.operation == "drop/publisher"
        moved = await enforcers["nginx-rtmp"].move(nginx, "room1__held")
        assert moved.ok
        answers["count"] = "0"
        gone = await enforcers["nginx-rtmp"].drop(nginx)
        assert not gone.ok and "no publisher" in gone.detail

        mtx = _pub(parse_mediamtx({"event": "ready", "path": "cam", "source_type": "rtspSession",
                                   "source_id": "ab-12"}))  # fmt: skip
        assert (await enforcers["mediamtx"].drop(mtx)).ok
        answers["mtx"] = 404
        missing = await enforcers["mediamtx"].drop(mtx)
        assert not missing.ok and "HTTP 404" in missing.detail
        assert not (await enforcers["mediamtx"].move(mtx, "x")).ok

        srs = _pub(parse_srs({"action": "on_publish", "client_id": "7k", "app": "live",
                              "stream": "s", "tcUrl": "rtmp://h/live"}))  # fmt: skip
        assert (await enforcers["srs"].drop(srs)).ok
        answers["srs"] = {"code": 2049}
        refused = await enforcers["srs"].drop(srs)
        assert not refused.ok and "2049" in refused.detail

        assert seen == [
            "GET /control/drop/publisher?app=live&name=room1&clientid=3",
            "GET /control/redirect/publisher?app=live&name=room1&clientid=3&newname=room1__held",
            "GET /control/drop/publisher?app=live&name=room1&clientid=3",
            "POST /v3/rtspsessions/kick/ab-12",
            "POST /v3/rtspsessions/kick/ab-12",
            "DELETE /api/v1/clients/7k",
            "DELETE /api/v1/clients/7k",
        ]

        unset = build_enforcers(
            nginx_control_url=None, mediamtx_api_url=None, srs_api_url=None, http=http
        )
        result = await unset["nginx-rtmp"].drop(nginx)
        assert not result.ok and "enforce.nginx_control_url is not set" in result.detail
        closed = build_enforcers(
            nginx_control_url="http://127.0.0.1:9/control",
            mediamtx_api_url=None, srs_api_url=None, http=http,
        )  # fmt: skip
        result = await closed["nginx-rtmp"].drop(nginx)
        assert not result.ok and "no answer" in result.detail


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clip = tmp_path_factory.mktemp("reconnect") / "short.mp4"
    testmedia.make_clip(clip, [testmedia.Segment(1.0, None)], fps=10)
    return clip


def _run_source(
    control: PullControl, url: str
) -> tuple[ReconnectingSource, list[VideoFrame], threading.Thread, list[Any]]:
    frames: list[VideoFrame] = []
    source = ReconnectingSource(
        "s1", SourceOptions(url=url, realtime=True), FrameSampler(4.0, 4.0), frames.append,
        control,
    )  # fmt: skip
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(source.run()), daemon=True)
    thread.start()
    return source, frames, thread, result


def test_reconnecting_pull_keeps_the_media_clock_running(short_clip: Path) -> None:
    control = PullControl(str(short_clip), backoff_s=0.05)
    retries: list[int] = []
    control.on_retry = lambda attempt, why: retries.append(attempt)
    _, frames, thread, result = _run_source(control, str(short_clip))
    time.sleep(2.6)  # the 1 s file "ends while the publisher is live" twice
    control.finish()
    thread.join(10)
    assert result[0].reason == "eof"
    times = [f.media_time_s for f in frames]
    # Reopened passes continue the clock instead of restarting it at 0.
    assert times == sorted(times) and times[-1] > 1.8
    assert len(retries) >= 2 and set(retries) == {1}  # frames came: backoff starts over


def test_reconnecting_pull_gives_up_when_nothing_comes() -> None:
    control = PullControl("rtmp://127.0.0.1:9/live/none", give_up_s=0.6, backoff_s=0.1)
    retries: list[int] = []
    control.on_retry = lambda attempt, why: retries.append(attempt)
    _, frames, thread, result = _run_source(control, control.url)
    thread.join(20)
    (end,) = result
    assert end.reason == "error" and "gave up reconnecting" in (end.error or "")
    assert "connection refused" in (end.error or "") and not frames
    assert retries[:3] == [1, 2, 3]


def test_reconnecting_pull_follows_a_switch_and_ends_on_finish(short_clip: Path) -> None:
    control = PullControl("rtmp://127.0.0.1:9/live/none", give_up_s=30, backoff_s=5.0)
    _, frames, thread, result = _run_source(control, control.url)
    time.sleep(0.5)  # the first open is refused; it now backs off for 5 s
    control.switch(str(short_clip))
    deadline = time.monotonic() + 10
    while not frames and time.monotonic() < deadline:
        time.sleep(0.05)
    assert frames, "the switch did not reopen at once"
    control.finish()
    thread.join(10)
    assert result and result[0].reason == "eof" and result[0].frames_sampled > 0


def test_documented_hooks_and_enforce_keys_equal_the_defaults() -> None:
    from livemod.config import load_config
    from livemod.paths import CONFIGS_DIR

    documented = load_config(CONFIGS_DIR / "livemod.yaml", environ={})
    defaults = load_config(None, environ={})
    assert documented.hooks == defaults.hooks and documented.enforce == defaults.enforce
    assert not defaults.enforce.enabled  # acting on servers is opt-in
