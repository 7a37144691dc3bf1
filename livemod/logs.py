"""Logging set-up: one line per record, structured fields as ``key=value``.

Sensitive values (user ids, transcripts) travel in ``extra`` fields, never in the
message text, so a deployment can drop or hash them in one place. Secrets never
reach a line at all: credentials inside URLs are masked in every line this module
formats (and in every event, by the same :func:`redact_credentials`), and aiortc's
and aioice's records lose their SDP bodies and ICE passwords at every level.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pkgutil
import re
import sys
from collections.abc import Iterator, Sequence

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s?#'\"<>\\]*@")
_TURN_USERINFO = re.compile(r"\b(turns?:)(?!//)[^/\s?#'\"<>\\@]*@")


def redact_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it replaced by ``***``
    (``http://user:pass@host/x`` becomes ``http://***@host/x``; TURN's
    ``turn:user:pass@host`` too). Up to the last ``@`` of the authority, as FFmpeg
    parses it, so a password holding ``@`` is masked whole."""
    if "@" not in text:
        return text
    return _TURN_USERINFO.sub(r"\1***@", _URL_USERINFO.sub(r"\1***@", text))


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        fields = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        if fields:
            base += " " + " ".join(f"{k}={v!r}" for k, v in sorted(fields.items()))
        # The whole line: message, fields and traceback may all quote a pull URL.
        return redact_credentials(base)


WEBRTC_LOGGERS = ("aiortc", "aioice")
"""Libraries whose records may carry SDP and ICE credentials (aiortc logs whole offers
and answers at DEBUG, aioice every STUN message with its USERNAME)."""

_SDP_LINE = re.compile(r"[a-z]=")
_ICE_PWD = re.compile(r"(ice-pwd:)\S+")
_PASSWORD_FIELD = re.compile(
    r"\b((?:\w*password|credential|usernameFragment)\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s,)]+)"
)
_STUN_SECRET = re.compile(
    r"('(?:USERNAME|MESSAGE-INTEGRITY|MESSAGE-INTEGRITY-SHA256|USERHASH|NONCE|REALM)'"
    r"(?:, |: ))(b?'[^']*'|b?\"[^\"]*\")"
)


def scrub_webrtc(text: str) -> str:
    """``text`` without SDP bodies (each becomes ``[SDP withheld: N lines]``) and
    without ICE passwords, ufrags, STUN credentials and TURN passwords."""
    if "v=0" in text:
        text = _without_sdp(text)
    text = _ICE_PWD.sub(r"\1***", text)
    text = _PASSWORD_FIELD.sub(r"\1'***'", text)
    return _STUN_SECRET.sub(r"\1'***'", text)


def _without_sdp(text: str) -> str:
    out: list[str] = []
    withheld = 0
    for line in text.split("\n"):
        bare = line.rstrip("\r")
        if bare == "v=0" or (withheld and _SDP_LINE.match(bare)):
            withheld += 1
            continue
        if withheld:
            out.append(f"[SDP withheld: {withheld} lines]")
            withheld = 0
        out.append(line)
    if withheld:
        out.append(f"[SDP withheld: {withheld} lines]")
    return "\n".join(out)


class WebRtcSecretFilter(logging.Filter):
    """Rewrites aiortc's and aioice's records in place, before any handler sees them:
    SDP bodies and ICE secrets are dropped (:func:`scrub_webrtc`); other records pass
    untouched. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(WEBRTC_LOGGERS):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a broken format string: the handler reports it, not us
            return True
        clean = scrub_webrtc(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


_WEBRTC_FILTER = WebRtcSecretFilter()


def _module_names(package: str, paths: Sequence[str]) -> Iterator[str]:
    for info in pkgutil.iter_modules(list(paths), prefix=package + "."):
        yield info.name
        if info.ispkg:
            leaf = info.name.rsplit(".", 1)[1]
            yield from _module_names(info.name, [os.path.join(p, leaf) for p in paths])


def protect_webrtc_logs() -> None:
    """Attach :class:`WebRtcSecretFilter` to the logger of every aiortc and aioice
    module (found on disk, not imported). A logger's filter sees only the records
    logged on it, not its children's, hence one per module; any handler then gets
    clean records, pytest's and an operator's own included."""
    for package in WEBRTC_LOGGERS:
        spec = importlib.util.find_spec(package)
        paths = spec.submodule_search_locations if spec is not None else None
        names = [package, *(_module_names(package, list(paths)) if paths else [])]
        for name in names:
            logger = logging.getLogger(name)
            if _WEBRTC_FILTER not in logger.filters:
                logger.addFilter(_WEBRTC_FILTER)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Also on the handler: a logger created after start-up still goes through it.
    handler.addFilter(_WEBRTC_FILTER)
    protect_webrtc_logs()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)
