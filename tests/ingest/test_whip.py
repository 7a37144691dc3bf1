"""WHIP end to end: real aiortc and Chromium publishers, a real daemon, loopback only."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import aioice.stun
import av
import pytest
import websockets
from aiortc import RTCPeerConnection, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer

from livemod.ingest.whip.client import WhipClient, WhipRefused
from livemod.ingest.whip.ice import host_addresses, rtc_configuration
from livemod.ingest.whip.sdp import candidate_address
from livemod.paths import DEFAULT_POLICY, REPO_ROOT
from livemod.testing import media as testmedia
from tests.conftest import BAD_END, BAD_START, TIMEOUT_SCALE, DaemonProcess, loopback_only

pytestmark = pytest.mark.e2e

LOOPBACK = ["127.0.0.1"]
WHIP_ENV = {
    "LIVEMOD_WHIP__ICE_ADDRESSES": json.dumps(LOOPBACK),
    # The known-bad hash is the signal under test; the vision models only cost time.
    "LIVEMOD_VISION__MODELS": "[]",
    "LIVEMOD_OCR__ENABLED": "false",
}
Event = dict[str, Any]
SDPFRAG = "application/trickle-ice-sdpfrag"


def start_daemon(workdir: Path, known_bad: Path, **env: str) -> DaemonProcess:
    proc = DaemonProcess(workdir, known_bad, extra_env={**WHIP_ENV, **env})
    proc.start()
    return proc


@pytest.fixture
def whip_daemon(tmp_path: Path, known_bad_dir: Path) -> Iterator[DaemonProcess]:
    proc = start_daemon(tmp_path, known_bad_dir)
    yield proc
    proc.stop()


async def wait_event(ws: Any, match: Callable[[Event], bool], seen: list[Event], t: float) -> Event:
    """Read events into ``seen`` until one matches; return it."""

    async def run() -> Event:
        while True:
            event: Event = json.loads(await ws.recv())
            seen.append(event)
            if match(event):
                return event

    return await asyncio.wait_for(run(), t * TIMEOUT_SCALE)


def is_session(state: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "session" and e["state"] == state


def is_action(action: str, state: str) -> Callable[[Event], bool]:
    return lambda e: e["type"] == "action" and e["action"] == action and e["state"] == state


def annexb_copy(src: Path, dst: Path) -> Path:
    """Remux an mp4 into MPEG-TS (Annex B H.264), which aiortc can send undecoded."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mpegts") as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for packet in inp.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                out.mux(packet)
    return dst


class _StunResponder(asyncio.DatagramProtocol):
    """Answers STUN Binding requests with the sender's address, as any STUN server does."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            request = aioice.stun.parse_message(data)
        except ValueError:
            return
        if request.message_class != aioice.stun.Class.REQUEST:
            return
        response = aioice.stun.Message(
            message_method=request.message_method,
            message_class=aioice.stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)


@asynccontextmanager
async def stun_server() -> AsyncIterator[str]:
    """A STUN server on 127.0.0.1 for ``whip.ice_servers``: its ``stun:`` URL.

    A listed server that never answers would hold every answer's ICE gathering
    for aioice's 5 s timeout; this one answers at once, on loopback.
    """
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_StunResponder, local_addr=("127.0.0.1", 0))
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        yield f"stun:{host}:{port}"
    finally:
        transport.close()


def answer_candidates(sdp: str) -> set[str]:
    return {candidate_address(ln) for ln in sdp.splitlines() if ln.startswith("a=candidate:")}


async def test_h264_publisher_is_paused_released_and_deleted(
    whip_daemon: DaemonProcess, violation_clip: Path, tmp_path: Path
) -> None:
    clip = annexb_copy(violation_clip, tmp_path / "violation.ts")
    seen: list[Event] = []
    async with (
        websockets.connect(f"{whip_daemon.ws}?room_id=whip-1") as ws,
        aiohttp.ClientSession() as http,
    ):
        client = WhipClient(f"{whip_daemon.base}/whip/whip-1?user_id=alice", ice_addresses=LOOPBACK)
        # Trickle: the offer has no candidates; they follow in a PATCH.
        location = await client.publish(
            MediaPlayer(str(clip), decode=False).video, codec="H264", trickle=True
        )
        assert client.answer is not None and answer_candidates(client.answer) == {"127.0.0.1"}
        assert client.etag and location.startswith(f"{whip_daemon.base}/whip/whip-1/")
        started = await wait_event(ws, is_session("started"), seen, 10)
        sid = started["stream_id"]
        assert location.endswith(f"/{sid}") and started["source"] == "whip"

        pause = await wait_event(ws, is_action("pause", "start"), seen, 30)
        held = await wait_event(ws, is_session("held"), seen, 5)
        assert pause["category"] == "known_bad" and pause["user_id"] == "alice"
        assert BAD_START <= pause["media_time_s"] <= BAD_START + 2.0
        assert 0 < pause["latency_ms"] < 2000 * TIMEOUT_SCALE
        assert held["action_seq"] == pause["seq"] and held["enforcer"] == "whip"
        await wait_event(ws, is_action("pause", "stop"), seen, 15)
        released = await wait_event(ws, is_session("released"), seen, 5)
        assert released["frames_held"] > 0
        assert BAD_END - BAD_START - 1.0 <= released["held_s"] <= BAD_END - BAD_START + 5.0

        async with http.get(f"{whip_daemon.base}/v1/streams/{sid}") as resp:
            summary = await resp.json()
        assert summary["status"] == "live" and summary["metadata"]["video_codec"] == "H264"
        assert client.state == "connected"
        assert await client.delete() == 200
        ended = await wait_event(ws, is_session("ended"), seen, 10)
        assert ended["reason"] == "stopped" and ended["frames"] > 100
    async with aiohttp.ClientSession() as http, http.delete(location) as resp:
        assert resp.status == 404  # the session is gone


async def test_end_closes_the_publishers_connection(tmp_path: Path, known_bad_dir: Path) -> None:
    policy = tmp_path / "policy.yaml"
    text = DEFAULT_POLICY.read_text()
    pause = "actions: {high: pause, medium: pause, low: review}"
    assert text.count(pause) == 1  # the known_bad category's actions
    policy.write_text(text.replace(pause, "actions: {high: end, medium: end, low: review}"))
    clip = tmp_path / "short.mp4"
    bad = testmedia.photo(testmedia.KNOWN_BAD_PHOTO)
    testmedia.make_clip(
        clip, [testmedia.Segment(1.5, None), testmedia.Segment(2.0, bad), testmedia.Segment(3.0)]
    )
    daemon = start_daemon(tmp_path, known_bad_dir, LIVEMOD_POLICY=str(policy))
    seen: list[Event] = []
    try:
        async with websockets.connect(f"{daemon.ws}?room_id=whip-2") as ws:
            url = f"{daemon.base}/whip/whip-2?user_id=carol"
            client = WhipClient(url, ice_addresses=LOOPBACK)
            await client.publish(MediaPlayer(str(clip)).video, codec="VP8")
            end = await wait_event(ws, is_action("end", "start"), seen, 30)
            enforced = await wait_event(ws, is_session("enforced"), seen, 5)
            ended = await wait_event(ws, is_session("ended"), seen, 10)
            assert enforced["action_seq"] == end["seq"] and enforced["action"] == "end"
            assert ended["reason"] == "stopped"
            # The daemon closed the peer connection: the publisher sees it end.
            await asyncio.wait_for(client.ended.wait(), 10 * TIMEOUT_SCALE)
            assert client.state == "closed"
            assert await client.delete() == 404
            # The encoder coming back is refused while the end stands.
            again = WhipClient(url, ice_addresses=LOOPBACK)
            with pytest.raises(WhipRefused) as refused:
                await again.publish(MediaPlayer(str(clip)).video)
            assert refused.value.status == 403 and "ended by moderation" in refused.value.body
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "scenario",
    [
        # livemod's own publisher page, same origin.
        "test_browser_publisher_is_moderated",
        # @eyevinn/whip-web-client from the npm registry, on a page of another origin.
        "test_third_party_client_publishes_cross_origin",
    ],
)
def test_browser_publisher_is_moderated(scenario: str) -> None:
    """A headless Chromium page publishes to the daemon over WHIP and is moderated.

    The whole scenario (daemon, browser, event client) runs in a fresh network
    namespace whose only interface is loopback, so no packet can use another address.
    """
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    inner.append(f"tests/netns_browser.py::{scenario}")
    cmd = inner
    if not loopback_only():
        script = "ip link set lo up && exec " + shlex.join(inner)
        cmd = ["unshare", "--net", "--fork", "sh", "-c", script]
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240 * TIMEOUT_SCALE
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout


PUBLISHER = """
import asyncio, sys
from aiortc import VideoStreamTrack
from livemod.ingest.whip.client import WhipClient

async def main():
    client = WhipClient(sys.argv[1], token="alice-key", ice_addresses=["127.0.0.1"])
    await client.publish(VideoStreamTrack(), codec="VP8")
    print(client.location, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""
Status = Callable[..., Awaitable[int]]


def spawn_publisher(url: str) -> subprocess.Popen[bytes]:
    """An aiortc publisher in its own process, so it can vanish for real."""
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, url], stdout=subprocess.PIPE, start_new_session=True
    )


async def test_bad_whip_requests(tmp_path: Path, known_bad_dir: Path) -> None:
    async with stun_server() as stun:
        daemon = start_daemon(
            tmp_path,
            known_bad_dir,
            LIVEMOD_HTTP__TOKEN="admin-token",
            LIVEMOD_WHIP__TOKENS=json.dumps({"alice-key": "alice", "bob-key": "bob"}),
            LIVEMOD_WHIP__IDLE_TIMEOUT_S="2",
            LIVEMOD_WHIP__ICE_SERVERS=json.dumps([stun]),
        )
        try:
            await check_bad_requests(daemon, stun)
        finally:
            daemon.stop()


async def check_bad_requests(daemon: DaemonProcess, stun: str) -> None:
    room = f"{daemon.base}/whip/room"
    alice = {"Authorization": "Bearer alice-key"}
    admin = {"Authorization": "Bearer admin-token"}
    sdp = {"Content-Type": "application/sdp"}
    audio_only = await audio_only_offer()
    no_dtls = "\r\n".join(ln for ln in audio_only.splitlines() if "fingerprint" not in ln)
    async with aiohttp.ClientSession() as http:

        async def status(method: str, url: str, body: str = "", **headers: str) -> int:
            async with http.request(method, url, data=body, headers=headers) as resp:
                if resp.status >= 400:
                    assert (await resp.json())["error"]
                return resp.status

        await check_options(http, room, stun)
        async with http.post(room, data="v=0", headers=sdp) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = {"Authorization": "Bearer nope"}
        assert await status("POST", room, audio_only, **sdp, **wrong) == 401
        assert await status("POST", room, audio_only, **alice) == 415
        assert await status("POST", room, "hello", **sdp, **alice) == 400
        assert await status("POST", room, "v=0\r\nm=video x\r\n", **sdp, **alice) == 400
        assert await status("POST", room, no_dtls, **sdp, **alice) == 400
        async with http.post(room, data=audio_only, headers={**sdp, **alice}) as resp:
            assert resp.status == 422 and "no video" in (await resp.json())["error"]
        assert await status("POST", f"{room}?user_id=bob", audio_only, **sdp, **alice) == 403
        assert await status("POST", room, audio_only, **sdp, **admin) == 422  # no user_id
        assert await status("DELETE", f"{room}/nosuchsession", **alice) == 404
        frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
        assert await status("PATCH", f"{room}/nosuchsession", "", **frag, **alice) == 404

        await check_patch_rules(daemon, status, stun)
        await check_vanished_publisher(http, daemon)
        async with http.get(f"{daemon.base}/healthz") as resp:
            assert resp.status == 200


async def audio_only_offer() -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    pc.addTransceiver("audio", direction="sendonly")
    with host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    offer = str(pc.localDescription.sdp)
    await pc.close()
    return offer


async def check_options(http: aiohttp.ClientSession, room: str, stun: str) -> None:
    """``OPTIONS`` is never refused (a preflight has no token); ICE servers go only
    to authorised callers; a browser's preflight for any client's PATCH passes."""
    link = f'<{stun}>; rel="ice-server"'
    for headers, links in (
        ({}, []),
        ({"Authorization": "Bearer nope"}, []),
        ({"Authorization": "Bearer alice-key"}, [link]),
        ({"Authorization": "Bearer admin-token"}, [link]),
    ):
        async with http.options(room, headers=headers) as resp:
            assert resp.status == 204 and resp.headers["Accept-Post"] == "application/sdp"
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert resp.headers.getall("Link", []) == links
    preflight = {
        "Origin": "http://127.0.0.1:1",
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization,content-type,etag,if-match",
    }
    async with http.options(f"{room}/anysession", headers=preflight) as resp:
        assert resp.status == 204 and resp.headers["Accept-Patch"] == SDPFRAG
        allowed = resp.headers["Access-Control-Allow-Headers"].lower().split(", ")
        assert set(preflight["Access-Control-Request-Headers"].split(",")) <= set(allowed)
        assert "PATCH" in resp.headers["Access-Control-Allow-Methods"]
        exposed = resp.headers["Access-Control-Expose-Headers"].split(", ")
        assert {"Access-Control-Allow-Methods", "Accept-Patch", "ETag", "Link"} <= set(exposed)
        assert resp.headers["Access-Control-Max-Age"] == "600"
        assert "Link" not in resp.headers


async def check_patch_rules(daemon: DaemonProcess, status: Status, stun: str) -> None:
    """On a live session: stale If-Match 412, ICE restart 422, wrong type 415,
    malformed fragment 400, a good fragment 204 (the entity tag in If-Match or in
    an ETag header, as some clients send it), another user's token 403; then
    ``DELETE /v1/streams/{id}`` closes the publisher's connection."""
    client = WhipClient(f"{daemon.base}/whip/patchy", token="alice-key", ice_addresses=LOOPBACK)
    await client.publish(VideoStreamTrack(), codec="VP8")
    loc = client.location
    assert loc is not None and client.etag
    assert client.links == [f'<{stun}>; rel="ice-server"']
    auth = {"Authorization": "Bearer alice-key"}
    frag = {"Content-Type": SDPFRAG, **auth}
    try:
        end = "a=end-of-candidates\r\n"
        assert await status("PATCH", loc, end, **frag, **{"If-Match": '"stale"'}) == 412
        assert await status("PATCH", loc, "a=ice-ufrag:new\r\n", **frag, **{"If-Match": "*"}) == 422
        assert await status("PATCH", loc, "a=ice-ufrag:new\r\na=ice-pwd:x\r\n", **frag) == 422
        assert await status("PATCH", loc, end, **auth) == 415
        assert await status("PATCH", loc, "garbage\r\n", **frag) == 400
        # What @eyevinn/whip-web-client sends: an ETag header, one m-line, component 0.
        eyevinn = (
            "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
            "a=candidate:2395300328 0 udp 2113937151 127.0.0.1 50123 typ host\r\n"
        )
        assert await status("PATCH", loc, eyevinn, **frag, ETag='"stale"') == 412
        assert await status("PATCH", loc, eyevinn, **frag, ETag=client.etag) == 204
        assert await status("PATCH", loc, end, **frag, **{"If-Match": client.etag}) == 204
        assert await status("DELETE", loc, Authorization="Bearer bob-key") == 403
        await asyncio.wait_for(client.connected.wait(), 10 * TIMEOUT_SCALE)
        # Stopping the stream through the generic API closes the WebRTC connection too.
        sid = loc.rsplit("/", 1)[1]
        admin = "Bearer admin-token"
        assert await status("DELETE", f"{daemon.base}/v1/streams/{sid}", Authorization=admin) == 200
        await asyncio.wait_for(client.ended.wait(), 10 * TIMEOUT_SCALE)
    finally:
        assert await client.delete() in (200, 404)


async def check_vanished_publisher(http: aiohttp.ClientSession, daemon: DaemonProcess) -> None:
    """A publisher killed without a DELETE: the session times out and is cleaned up."""
    async with websockets.connect(
        f"{daemon.ws}?room_id=gone", additional_headers={"Authorization": "Bearer admin-token"}
    ) as ws:
        url = f"{daemon.base}/whip/gone"
        proc = spawn_publisher(url)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(
                asyncio.to_thread(proc.stdout.readline), 30 * TIMEOUT_SCALE
            )
            location = line.decode().strip()
            seen: list[Event] = []
            started = await wait_event(ws, is_session("started"), seen, 10)
            await wait_for_frames(http, daemon, started["stream_id"])
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        error = await wait_event(ws, is_session("error"), seen, 20)
        assert "vanished" in error["error"] and error["stream_id"] == started["stream_id"]
    admin = {"Authorization": "Bearer admin-token"}
    async with http.delete(location, headers=admin) as resp:
        assert resp.status == 404
    async with http.get(f"{daemon.base}/v1/streams", headers=admin) as resp:
        assert started["stream_id"] not in [s["id"] for s in (await resp.json())["streams"]]


async def wait_for_frames(http: aiohttp.ClientSession, daemon: DaemonProcess, sid: str) -> None:
    admin = {"Authorization": "Bearer admin-token"}
    for _ in range(int(100 * TIMEOUT_SCALE)):
        async with http.get(f"{daemon.base}/v1/streams/{sid}", headers=admin) as resp:
            if (await resp.json())["samples"] > 0:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the publisher's frames never reached the analysis")


async def test_publishers_speech_is_moderated(tmp_path: Path, known_bad_dir: Path) -> None:
    """WHIP audio (Opus) reaches the speech path: a spoken threat is muted."""
    from livemod.testing import speech as ts

    threat = "I will kill you tonight."
    track, placed = ts.compose(
        [
            ts.Part(seconds=1.0),
            ts.Part("The weather today is sunny and warm."),
            ts.Part(seconds=1.0),
            ts.Part(threat),
            ts.Part(seconds=3.0),
        ]
    )
    clip = tmp_path / "speech.mp4"
    ts.mux_clip(clip, track)
    daemon = start_daemon(tmp_path, known_bad_dir, LIVEMOD_ASR__ENABLED="true")
    seen: list[Event] = []
    try:
        async with websockets.connect(f"{daemon.ws}?room_id=whip-talk") as ws:
            client = WhipClient(
                f"{daemon.base}/whip/whip-talk?user_id=dave", ice_addresses=LOOPBACK
            )
            player = MediaPlayer(str(clip))
            await client.publish(player.video, player.audio, codec="VP8")
            mute = await wait_event(ws, is_action("mute", "start"), seen, 60)
            assert mute["category"] == "violence" and mute["sources"] == ["asr"]
            spoken = next(p for p in placed if p.part.text == threat)
            start_s, end_s = mute["span_s"]
            # Media time of a WHIP publish starts at its first frame, not the file's 0.
            assert end_s - start_s <= spoken.end_s - spoken.start_s + 1.5
            unmoderated = [e for e in seen if e.get("state") == "audio_unmoderated"]
            assert unmoderated == []
            await client.delete()
    finally:
        daemon.stop()
