"""Pure checks on what WHIP publishers send: SDP offers and trickle fragments.

aiortc accepts almost any text as an offer (``hello`` parses as an empty
session), so the endpoint checks the structure itself and answers the RFC's
status with a body that says what is wrong: 400 for text that is not an SDP
offer, 422 for an offer livemod cannot use (no video, no H.264 or VP8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from livemod.errors import RequestError
from livemod.ingest.whip.ice import is_loopback

VIDEO_CODECS = ("H264", "VP8")
AUDIO_CODECS = ("opus",)
_LINE = re.compile(r"^[a-z]=")
_MEDIA = re.compile(r"^m=(\w+) (\d+)(?:/\d+)? (\S+)(?: \S+)+$")
_SENDING = ("sendonly", "sendrecv")


@dataclass(slots=True)
class _Media:
    kind: str
    codecs: list[str] = field(default_factory=list)
    direction: str = "sendrecv"
    port: int = 9


@dataclass(frozen=True, slots=True)
class OfferSummary:
    video_codecs: tuple[str, ...]
    audio_codecs: tuple[str, ...]
    """Empty when the offer sends no (usable) audio."""


def check_offer(sdp: str) -> OfferSummary:
    """Validate a publisher's offer; raise ``RequestError`` (400/422) with the reason."""
    lines = [ln.strip() for ln in sdp.splitlines() if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise RequestError("malformed SDP offer: it must start with the line v=0", status=400)
    for ln in lines:
        if not _LINE.match(ln):
            raise RequestError(f"malformed SDP offer: not an SDP line: {ln[:60]!r}", status=400)
    media: list[_Media] = []
    session_direction = "sendrecv"
    has_fingerprint = has_ufrag = has_pwd = False
    for ln in lines:
        if ln.startswith("m="):
            m = _MEDIA.match(ln)
            if m is None:
                raise RequestError(f"malformed SDP offer: bad media line {ln[:60]!r}", status=400)
            media.append(_Media(m.group(1), direction=session_direction, port=int(m.group(2))))
        elif ln.startswith("a=fingerprint:"):
            has_fingerprint = True
        elif ln.startswith("a=ice-ufrag:"):
            has_ufrag = True
        elif ln.startswith("a=ice-pwd:"):
            has_pwd = True
        elif ln[2:] in ("sendonly", "sendrecv", "recvonly", "inactive"):
            if media:
                media[-1].direction = ln[2:]
            else:
                session_direction = ln[2:]
        elif ln.startswith("a=rtpmap:") and media:
            parts = ln.split(None, 1)
            if len(parts) == 2:
                media[-1].codecs.append(parts[1].split("/", 1)[0])
    if not media:
        raise RequestError("malformed SDP offer: no media (m=) section", status=400)
    if not (has_fingerprint and has_ufrag and has_pwd):
        raise RequestError(
            "malformed SDP offer: a WebRTC offer needs a=fingerprint, a=ice-ufrag and a=ice-pwd",
            status=400,
        )
    video = [m for m in media if m.kind == "video" and m.port != 0 and m.direction in _SENDING]
    if not video:
        raise RequestError(
            "the offer sends no video: livemod moderates video, add a video track", status=422
        )
    offered = [c for m in video for c in m.codecs]
    usable = tuple(c for c in offered if c.upper() in VIDEO_CODECS)
    if not usable:
        raise RequestError(
            f"no supported video codec in the offer ({', '.join(offered) or 'none'}); "
            f"livemod accepts {' or '.join(VIDEO_CODECS)}",
            status=422,
        )
    audio = [m for m in media if m.kind == "audio" and m.port != 0 and m.direction in _SENDING]
    audio_codecs = tuple(c for m in audio for c in m.codecs if c.lower() in AUDIO_CODECS)
    return OfferSummary(usable, audio_codecs)


def candidate_address(line: str) -> str:
    """The connection address of an ``a=candidate:`` line (or bare ``candidate:``)."""
    fields = line.split()
    return fields[4] if len(fields) > 4 else ""


def keep_loopback_candidates(sdp: str) -> str:
    """Drop candidates a loopback-bound peer can never reach, and mDNS names,
    whose resolution would multicast off the host."""
    kept = [
        ln
        for ln in sdp.splitlines()
        if not ln.startswith("a=candidate:") or is_loopback(candidate_address(ln))
    ]
    return "\r\n".join(kept) + "\r\n"


@dataclass(slots=True)
class SdpFragment:
    """An ``application/trickle-ice-sdpfrag`` body (RFC 8840) as WHIP uses it.

    Clients in the wild send one ``m=`` section (or one per media, each with the
    same candidate), no ``a=end-of-candidates``, and sometimes component ``0``:
    all are accepted (see :func:`parse_sdpfrag`).
    """

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)
    """(mid, ``candidate:...`` attribute value) in order."""
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFragment:
    """Parse a trickle fragment; raises ``RequestError`` (400) on non-SDP lines."""
    frag = SdpFragment()
    mid: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not _LINE.match(line):
            raise RequestError(f"malformed SDP fragment line: {line[:60]!r}", status=400)
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :]
        elif line.startswith("a=ice-ufrag:"):
            frag.ice_ufrag = line[len("a=ice-ufrag:") :]
        elif line.startswith("a=ice-pwd:"):
            frag.ice_pwd = line[len("a=ice-pwd:") :]
        elif line.startswith("a=candidate:"):
            frag.candidates.append((mid, _rtp_component(line[len("a=") :])))
        elif line == "a=end-of-candidates":
            frag.end_of_candidates = True
    return frag


def _rtp_component(candidate: str) -> str:
    """Component ids start at 1 (RTP, the only one with rtcp-mux and BUNDLE), but
    ``@eyevinn/whip-web-client`` numbers RTP 0; aioice never pairs a candidate whose
    component it has not got, so 0 is read as 1."""
    fields = candidate.split(" ")
    if len(fields) > 1 and fields[1] == "0":
        fields[1] = "1"
    return " ".join(fields)


def answered_codec(sdp: str, kind: str) -> str | None:
    """The first codec of the first ``kind`` section of an answer (what will flow)."""
    in_kind = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if in_kind:
                return None
            in_kind = line.startswith(f"m={kind} ") and not line.startswith(f"m={kind} 0 ")
        elif in_kind and line.startswith("a=rtpmap:"):
            parts = line.split(None, 1)
            return parts[1].split("/", 1)[0] if len(parts) == 2 else None
    return None


def ice_ufrag(sdp: str) -> str | None:
    for raw in sdp.splitlines():
        if raw.startswith("a=ice-ufrag:"):
            return raw.strip()[len("a=ice-ufrag:") :]
    return None
