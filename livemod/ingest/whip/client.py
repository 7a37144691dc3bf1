"""A small WHIP publisher (aiortc): what OBS does, for tests, benchmarks and tools.

    client = WhipClient("http://127.0.0.1:8080/whip/room-1?user_id=alice",
                        ice_addresses=["127.0.0.1"])
    await client.publish(MediaPlayer("clip.mp4").video, codec="VP8")
    ...
    await client.delete()

``ice_addresses`` limits the host candidates this client offers (aioice never
offers 127.0.0.1 by itself). With ``trickle=True`` the offer carries no
candidates and they follow in one ``PATCH`` (RFC 9725 4.3.1).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from urllib.parse import urljoin

import aiohttp
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from livemod.errors import LivemodError
from livemod.ingest.whip.ice import host_addresses, rtc_configuration


class WhipRefused(LivemodError):
    """The WHIP endpoint answered something other than ``201 Created``."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHIP endpoint answered {status}: {body}")
        self.status = status
        self.body = body


def strip_candidates(sdp: str) -> tuple[str, list[str]]:
    """The offer without candidate lines, and those lines (for a trickle PATCH)."""
    kept: list[str] = []
    candidates: list[str] = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidates.append(line)
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


class WhipClient:
    """Publishes tracks to one WHIP endpoint URL."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        ice_addresses: Sequence[str] = (),
        ice_servers: Sequence[str] = (),
    ) -> None:
        self.url = url
        self._token = token
        self._ice_addresses = list(ice_addresses)
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.location: str | None = None
        self.etag: str | None = None
        self.answer: str | None = None
        self.links: list[str] = []
        """The ``Link`` headers of the ``201`` (the endpoint's ICE servers)."""
        self.connected = asyncio.Event()
        self.ended = asyncio.Event()
        """Set when the connection reaches ``closed`` or ``failed`` (e.g. the daemon
        closed it to enforce an ``end``)."""
        self.pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState == "connected":
            self.connected.set()
        if self.pc.connectionState in ("closed", "failed"):
            self.ended.set()

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"Content-Type": content_type} if content_type else {}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def publish(
        self,
        video: MediaStreamTrack | None,
        audio: MediaStreamTrack | None = None,
        *,
        codec: str | None = None,
        trickle: bool = False,
    ) -> str:
        """Offer, POST, apply the answer; returns the session's URL (``Location``)."""
        if video is not None:
            transceiver = self.pc.addTransceiver(video, direction="sendonly")
            if codec is not None:
                caps = RTCRtpSender.getCapabilities("video")
                chosen = [c for c in caps.codecs if c.mimeType.lower() == f"video/{codec.lower()}"]
                transceiver.setCodecPreferences(chosen)
        if audio is not None:
            self.pc.addTransceiver(audio, direction="sendonly")
        with host_addresses(self._ice_addresses):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        candidates: list[str] = []
        if trickle:
            offer, candidates = strip_candidates(offer)
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.url, data=offer, headers=self._headers("application/sdp")) as resp,
        ):
            body = await resp.text()
            if resp.status != 201:
                await self.pc.close()
                raise WhipRefused(resp.status, body)
            self.location = urljoin(self.url, resp.headers["Location"])
            self.etag = resp.headers.get("ETag")
            self.links = resp.headers.getall("Link", [])
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
        if trickle:
            await self.patch(candidates)
        return self.location

    async def patch(self, candidate_lines: Sequence[str], *, end: bool = True) -> int:
        """Trickle candidates to the session; returns the HTTP status."""
        assert self.location is not None, "publish first"
        frag = "a=mid:0\r\n" + "".join(f"{c}\r\n" for c in candidate_lines)
        if end:
            frag += "a=end-of-candidates\r\n"
        headers = self._headers("application/trickle-ice-sdpfrag")
        if self.etag:
            headers["If-Match"] = self.etag
        async with (
            aiohttp.ClientSession() as http,
            http.patch(self.location, data=frag, headers=headers) as resp,
        ):
            return resp.status

    async def delete(self) -> int:
        """End the session (``DELETE``), then close the connection; returns the status."""
        status = 0
        if self.location is not None:
            async with (
                aiohttp.ClientSession() as http,
                http.delete(self.location, headers=self._headers()) as resp,
            ):
                status = resp.status
        await self.pc.close()
        return status

    async def close(self) -> None:
        """Close the connection without telling the endpoint (a vanished publisher
        would not even do this much)."""
        await self.pc.close()
