"""WHIP's pure parts: offer checks, trickle fragments, the media clock, the frame
source's one-slot mailbox, ICE address scoping and the access rules."""

from __future__ import annotations

import asyncio
import threading
from fractions import Fraction
from pathlib import Path

import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection

from livemod.config import WhipConfig, load_config
from livemod.errors import ConfigError, RequestError
from livemod.ingest.av_source import SourceEnd
from livemod.ingest.whip import sdp
from livemod.ingest.whip.access import (
    Caller,
    EndRefusals,
    authorize,
    check_room,
    cors_headers,
    etag_matches,
    publisher_user,
    request_etag,
)
from livemod.ingest.whip.client import strip_candidates
from livemod.ingest.whip.ice import host_addresses, parse_ice_server, rtc_configuration
from livemod.ingest.whip.peer import WhipPeer
from livemod.ingest.whip.source import MediaClock, WhipSource
from livemod.messages import VideoFrame
from livemod.sampling import FrameSampler


async def make_offer(*kinds: str) -> str:
    pc = RTCPeerConnection(rtc_configuration([]))
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    with host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    offer = str(pc.localDescription.sdp)
    await pc.close()
    return offer


async def test_offer_checks() -> None:
    both = await make_offer("video", "audio")
    summary = sdp.check_offer(both)
    assert set(summary.video_codecs) == {"VP8", "H264"} and summary.audio_codecs == ("opus",)
    assert sdp.check_offer(await make_offer("video")).audio_codecs == ()

    def status_of(text: str) -> tuple[int, str]:
        with pytest.raises(RequestError) as err:
            sdp.check_offer(text)
        return err.value.status, str(err.value)

    assert status_of("hello")[0] == 400
    assert status_of("")[0] == 400
    assert status_of("v=0\r\ns=-\r\n")[0] == 400  # no media
    assert status_of("v=0\r\nm=video nine UDP 96\r\n")[0] == 400
    no_dtls = "\r\n".join(ln for ln in both.splitlines() if not ln.startswith("a=fingerprint"))
    assert "fingerprint" in status_of(no_dtls)[1]
    assert status_of(await make_offer("audio")) == (
        422,
        "the offer sends no video: livemod moderates video, add a video track",
    )
    av1 = both.replace("VP8/90000", "AV1/90000").replace("H264/90000", "VP9/90000")
    code, text = status_of(av1)
    assert code == 422 and "AV1" in text and "H264 or VP8" in text
    assert status_of(both.replace("a=sendonly", "a=recvonly"))[0] == 422


def test_sdpfrag_and_candidates() -> None:
    frag = sdp.parse_sdpfrag(
        "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n"
        "a=end-of-candidates\r\n"
    )
    assert frag.ice_ufrag == "EsAw" and frag.end_of_candidates
    assert frag.candidates == [("0", "candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host")]
    with pytest.raises(RequestError) as err:
        sdp.parse_sdpfrag("not sdp\r\n")
    assert err.value.status == 400

    offer = (
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        "a=candidate:1 1 udp 1 192.0.2.7 5000 typ host\r\n"
        "a=candidate:2 1 udp 1 127.0.0.1 5001 typ host\r\n"
        "a=candidate:3 1 udp 1 0b5c4c3e-2d1e.local 5002 typ host\r\n"
    )
    kept = sdp.keep_loopback_candidates(offer)
    assert "127.0.0.1" in kept and "192.0.2.7" not in kept and ".local" not in kept
    answer = (
        "v=0\r\nm=audio 9 X 111\r\na=rtpmap:111 opus/48000/2\r\n"
        "m=video 9 X 96\r\na=rtpmap:96 VP8/90000\r\n"
    )
    assert sdp.answered_codec(answer, "video") == "VP8"
    assert sdp.answered_codec(answer, "audio") == "opus"


# What @eyevinn/whip-web-client 1.1.7 PATCHes for each candidate (made by its own
# code with sdp-transform): one m-line per media, the candidate's component as 0
# (its "rtp" -> 0), and never a=end-of-candidates.
EYEVINN_FRAGMENT = (
    "a=ice-ufrag:Xy4k\r\na=ice-pwd:Zk1d8M3qv2T7Yw0bNcRfHsLp\r\n"
    "m=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
    "a=candidate:2395300328 0 udp 2113937151 127.0.0.1 50123 typ host\r\n"
)


def test_fragments_real_clients_send() -> None:
    frag = sdp.parse_sdpfrag(EYEVINN_FRAGMENT)
    assert frag.ice_ufrag == "Xy4k" and not frag.end_of_candidates
    # Component 0 is read as 1 (RTP), the only component aioice pairs with.
    assert frag.candidates == [
        ("0", "candidate:2395300328 1 udp 2113937151 127.0.0.1 50123 typ host")
    ]
    # A candidate under each m-line (audio and video) of one BUNDLE: both kept.
    two = (
        EYEVINN_FRAGMENT
        + "m=audio 9 RTP/AVP 0\r\na=mid:1\r\n"
        + ("a=candidate:2395300328 0 udp 2113937151 127.0.0.1 50123 typ host\r\n")
    )
    assert [mid for mid, _ in sdp.parse_sdpfrag(two).candidates] == ["0", "1"]
    # No m-line, no mid (the aiortc client's form): component 1 stays 1.
    bare = sdp.parse_sdpfrag("a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n")
    assert bare.candidates == [(None, "candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host")]


async def test_trickled_component_zero_candidate_is_taken_as_rtp() -> None:
    """A real aiortc answerer takes the eyevinn fragment's candidate as RTP's, which
    aioice pairs with its own (component 1) candidates."""
    publisher = RTCPeerConnection(rtc_configuration([]))
    publisher.addTransceiver("video", direction="sendonly")
    with host_addresses(["127.0.0.1"]):
        await publisher.setLocalDescription(await publisher.createOffer())
    offer, _ = strip_candidates(publisher.localDescription.sdp)
    peer = WhipPeer(WhipConfig(ice_addresses=["127.0.0.1"]))
    try:
        await peer.negotiate(offer)
        (transceiver,) = peer.pc.getTransceivers()
        frag = sdp.parse_sdpfrag(EYEVINN_FRAGMENT.replace("a=mid:0", f"a=mid:{transceiver.mid}"))
        assert await peer.add_candidates(frag) == 1
        remote = transceiver.receiver.transport.transport.getRemoteCandidates()
        assert [(c.ip, c.port, c.component) for c in remote] == [("127.0.0.1", 50123, 1)]
    finally:
        await peer.close()
        await publisher.close()


def test_cors_serves_clients_on_other_origins() -> None:
    headers = cors_headers("*")
    exposed = {h.strip().lower() for h in headers["Access-Control-Expose-Headers"].split(",")}
    # What clients read: trickle support, the session, its tag, the ICE servers.
    assert {"access-control-allow-methods", "accept-patch", "location", "etag", "link"} <= exposed
    allowed = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "etag"} <= allowed
    assert "PATCH" in headers["Access-Control-Allow-Methods"].split(", ")
    assert headers["Access-Control-Max-Age"] == "600"

    assert request_etag({"If-Match": '"a-1"', "ETag": '"b-2"'}) == '"a-1"'
    assert request_etag({"ETag": ' "b-2" '}) == '"b-2"'
    assert request_etag({"If-Match": ""}) is None and request_etag({}) is None
    assert etag_matches('"a-1"', '"a-1"') and etag_matches("a-1", '"a-1"')
    assert etag_matches('"x", "a-1"', '"a-1"') and not etag_matches('"a-2"', '"a-1"')


def test_media_clock_never_runs_back() -> None:
    clock = MediaClock()
    assert clock.media_time(1000.0, 50.0) == 0.0  # starts at zero whatever the RTP origin
    assert clock.media_time(1000.5, 50.5) == pytest.approx(0.5)
    # A new SSRC restarts the RTP clock: continue from the wall time elapsed.
    assert clock.media_time(3.0, 50.7) == pytest.approx(0.7)
    assert clock.media_time(3.2, 50.9) == pytest.approx(0.9)
    assert clock.media_time(None, 51.4) == pytest.approx(1.4)
    assert clock.media_time(3.5, 51.5) == pytest.approx(1.4)  # a late frame: no step back


def av_frame(index: int) -> av.VideoFrame:
    image = np.full((720, 1280, 3), index % 256, np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    frame.pts = index * 3600  # 25 fps on the 90 kHz RTP clock
    frame.time_base = Fraction(1, 90000)
    return frame


async def test_source_keeps_only_the_latest_frame_and_ends_once() -> None:
    delivered: list[VideoFrame] = []
    ended = asyncio.Event()
    sampler = FrameSampler(4.0, 4.0)
    source = WhipSource(
        "s1", sampler, delivered.append, loop=asyncio.get_running_loop(), on_end=ended.set
    )
    # The converter thread is not running yet: admitted frames replace each other.
    for i in range(0, 75):  # 3 s at 25 fps, 4 fps admitted -> 12 frames, 11 dropped
        source.offer(av_frame(i), 100.0 + i / 25)
    assert source.received == 75 and sampler.admitted == 12 and source.dropped == 11
    thread_end: list[SourceEnd] = []
    thread = threading.Thread(target=lambda: thread_end.append(source.run()))
    thread.start()
    for _ in range(100):
        if delivered:
            break
        await asyncio.sleep(0.02)
    (frame,) = delivered
    # The newest admitted frame, with the arrival time it came out of the jitter buffer.
    assert frame.media_time_s > 2.5 and frame.t_arrival == pytest.approx(100 + frame.media_time_s)
    assert (frame.width, frame.height) == (640, 360) and frame.source_width == 1280
    source.held = True
    source.offer(av_frame(75), 103.0)
    assert source.held_frames == 1
    assert source.finish("error", "gone") and not source.finish("stopped")
    await asyncio.to_thread(thread.join, 5)
    await asyncio.wait_for(ended.wait(), 1)
    (end,) = thread_end
    assert (end.reason, end.error, end.frames_decoded) == ("error", "gone", 76)


async def test_host_addresses_are_scoped_to_the_context() -> None:
    outside = aioice.ice.get_host_addresses(True, True)
    assert "127.0.0.1" not in outside
    with host_addresses(["127.0.0.1", "::1"]):
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(True, True) == outside
    assert rtc_configuration([]).iceServers == []
    turn = parse_ice_server("turn:me:secret@turn.example.net:3478?transport=udp")
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:turn.example.net:3478?transport=udp",
        "me",
        "secret",
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("whip:\n  ice_addresses: [localhost]\n", "whip.ice_addresses"),
        ("whip:\n  ice_servers: ['stun.example.net']\n", "whip.ice_servers"),
        ("whip:\n  idle_timeout_s: 0\n", "whip.idle_timeout_s"),
    ],
)
def test_whip_config_errors_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert needle in str(err.value)


def test_access_rules() -> None:
    tokens = {"key-a": "alice"}
    assert authorize("", None, {}) == Caller(None)  # an open (loopback) daemon
    assert authorize("Bearer key-a", "admin", tokens) == Caller("alice")
    assert authorize("Bearer admin", "admin", tokens) == Caller(None)
    for header in ("", "Basic key-a", "Bearer key-b"):
        with pytest.raises(RequestError) as err:
            authorize(header, "admin", tokens)
        assert err.value.status == 401
    assert publisher_user(Caller("alice"), None) == "alice"
    assert publisher_user(Caller(None), "bob") == "bob"
    for caller, asked, status in ((Caller("alice"), "bob", 403), (Caller(None), None, 422)):
        with pytest.raises(RequestError) as err:
            publisher_user(caller, asked)
        assert err.value.status == status

    assert check_room("room-1") == "room-1"
    # The whole id must match: `$` alone would let a trailing newline through.
    for bad in ("bob\n", "bob\r\n", "b\nob", ""):
        with pytest.raises(RequestError) as err:
            publisher_user(Caller(None), bad)
        assert err.value.status == 422
        with pytest.raises(RequestError) as err:
            check_room(bad)
        assert err.value.status == 422

    refusals = EndRefusals(refuse_s=60.0)
    refusals.remember("alice:r1", "known_bad", now=100.0)
    refusals.check("bob:r1", now=101.0)  # another user in the room is not refused
    with pytest.raises(RequestError) as err:
        refusals.check("alice:r1", now=159.0)
    assert err.value.status == 403 and "known_bad" in str(err.value)
    refusals.check("alice:r1", now=160.0)  # lapsed
    refusals.check("alice:r1", now=161.0)
