"""The pure parts of escalation (verdict, breaker, rate limit, triage) and the
LLM client against the scripted fake speaking both protocols."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import pytest

from livemod.config import LlmConfig
from livemod.escalation.breaker import CircuitBreaker, TokenBucket
from livemod.escalation.llm import Clip, LlmClient, LlmError, parse_retry_after
from livemod.escalation.triage import escalation_reason, plan_fallback, plan_for_verdict
from livemod.escalation.verdict import Verdict, VerdictError, parse_verdict
from livemod.paths import DEFAULT_POLICY
from livemod.policy.taxonomy import load_policy
from livemod.testing.fake_llm import SAFE, FakeLlm, Reply, unsafe
from tests.inproc import image

CATS = ["sexual", "violence", "hate", "self_harm", "drugs", "weapons", "known_bad"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- verdict ------------------------------------------------------------------------


def test_verdict_parses_plain_and_fenced_json() -> None:
    v = parse_verdict(json.dumps(unsafe("violence", "pause", 0.8)), CATS)
    assert v == Verdict(True, 0.8, "violence", "the clip shows violence content", "pause")
    fenced = "```json\n" + json.dumps(SAFE) + "\n```"
    assert parse_verdict(fenced, CATS).unsafe is False


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("I think it is fine", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({**SAFE, "unsafe": "false"}), "unsafe must be"),
        (json.dumps({**SAFE, "confidence": 1.5}), "outside 0..1"),
        (json.dumps({**SAFE, "confidence": True}), "must be a number"),
        (json.dumps({**SAFE, "label": "spam"}), "not a policy category"),
        (json.dumps({**SAFE, "action": "ban"}), "not one of"),
        (json.dumps({k: v for k, v in SAFE.items() if k != "rationale"}), "lacks rationale"),
        (json.dumps({**SAFE, "extra": 1}), "unknown field"),
        (json.dumps({**SAFE, "action": "pause"}), "says safe but asks"),
        (json.dumps(unsafe("none", "pause")), "names no category"),
        (json.dumps({**SAFE, "possible_minor": "yes"}), "possible_minor"),
    ],
)
def test_a_verdict_off_the_schema_is_an_error_never_safe(text: str, needle: str) -> None:
    with pytest.raises(VerdictError, match=needle):
        parse_verdict(text, CATS)


# -- breaker and bucket ---------------------------------------------------------------


def test_breaker_opens_after_n_failures_in_the_window_and_recovers() -> None:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(
        failures=3,
        window_s=10,
        cooldown_s=5,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    # Failures spread wider than the window never open it.
    for _ in range(4):
        assert b.allow()
        b.record_failure()
        clock.t += 6
    assert b.state == "closed"
    clock.t += 20
    for _ in range(3):
        assert b.allow()
        b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.t += 4.9
    assert not b.allow()
    clock.t += 0.2
    assert b.state == "half_open"
    assert b.allow() and not b.allow()  # exactly one probe
    b.record_failure()  # the probe failed: open for another cooldown
    assert b.state == "open" and not b.allow()
    clock.t += 5
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow() and b.allow()
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_a_success_resets_the_failure_count() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=2, window_s=10, cooldown_s=5, clock=clock)
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"


def test_token_bucket_spaces_calls_after_a_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=2, clock=clock)
    assert [bucket.reserve() for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    clock.t += 2.0
    assert bucket.reserve() == 0.0
    assert TokenBucket(rate=0, burst=1, clock=clock).reserve() == 0.0


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    got = parse_retry_after(date, now)
    assert got is not None and 28 <= got <= 31


# -- triage ------------------------------------------------------------------------


def action(**over: Any) -> dict[str, Any]:
    base = {
        "type": "action",
        "state": "start",
        "action": "review",
        "category": "violence",
        "tier": "medium",
        "confidence": 0.8,
        "sources": ["vision:a"],
    }
    return {**base, **over}


def test_which_actions_escalate() -> None:
    cfg = LlmConfig(always_escalate=["known_bad"], cross_check={"sexual": ["v:a", "v:b"]})
    loaded = {"v:a", "v:b", "hash"}
    assert escalation_reason(action(), cfg, loaded) == "tier_medium"
    assert escalation_reason(action(tier="high"), cfg, loaded) is None
    assert escalation_reason(action(state="stop"), cfg, loaded) is None
    assert escalation_reason(action(origin="llm"), cfg, loaded) is None
    assert escalation_reason({"type": "session", "state": "start"}, cfg, loaded) is None
    bad = action(category="known_bad", tier="high", sources=["hash"])
    assert escalation_reason(bad, cfg, loaded) == "always"
    one = action(category="sexual", tier="high", sources=["v:a"])
    assert escalation_reason(one, cfg, loaded) == "disagreement"
    both = action(category="sexual", tier="high", sources=["v:a", "v:b"])
    assert escalation_reason(both, cfg, loaded) is None
    # A cross-check needs both analyzers loaded: one alone cannot disagree.
    assert escalation_reason(one, cfg, {"v:a"}) is None


def test_plans_for_verdicts() -> None:
    cfg = LlmConfig(min_confidence=0.6, max_action="pause")
    v = Verdict(True, 0.9, "violence", "r", "end")
    assert plan_for_verdict(v, "review", cfg).start == "pause"  # capped at max_action
    assert plan_for_verdict(v, "review", cfg).outcome == "upgraded"
    assert plan_for_verdict(v, "pause", cfg).outcome == "confirmed"
    assert plan_for_verdict(v, None, cfg).start is None
    safe = Verdict(False, 0.9, "none", "r", "none")
    assert plan_for_verdict(safe, "blur", cfg).lift
    unsure = Verdict(True, 0.4, "violence", "r", "pause")
    plan = plan_for_verdict(unsure, "review", cfg)
    assert plan.outcome == "inconclusive" and plan.review and plan.start is None


def test_fallback_modes_do_what_they_say() -> None:
    policy = load_policy(DEFAULT_POLICY)
    cfg = LlmConfig(degraded_confidence=0.8)
    kw: dict[str, Any] = {"category": "violence", "policy": policy, "config": cfg}
    opened = plan_fallback("fail_open", confidence=0.8, standing="review", **kw)
    assert opened.lift and not opened.review and opened.start is None
    # A confident (high-tier) first pass stands even when the LLM fails open.
    sure = plan_fallback("fail_open", confidence=0.97, standing="pause", **kw)
    assert not sure.lift and sure.start is None
    closed = plan_fallback("fail_closed", confidence=0.8, standing="review", **kw)
    assert closed.start == "pause" and closed.review and not closed.lift
    strict = plan_fallback("degraded", confidence=0.85, standing="review", **kw)
    assert strict.start == policy.categories["violence"].actions["high"] == "pause"
    lenient = plan_fallback("degraded", confidence=0.75, standing="review", **kw)
    assert lenient.start is None and not lenient.lift


# -- the client against the fake, both protocols ----------------------------------------


def clip() -> Clip:
    from livemod.escalation.clip import jpeg

    return Clip(
        stream_id="s1",
        category="violence",
        action="review",
        tier="medium",
        confidence=0.8,
        sources=("vision:a",),
        media_time_s=12.5,
        jpegs=(jpeg(image(), 512), jpeg(image(120), 512)),
        scores={"vision:a": 0.8},
        transcript="hello there",
    )


async def test_openai_protocol_request_and_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeLlm(Reply(verdict=unsafe("violence", "pause"))) as llm:
        cfg = LlmConfig(base_url=llm.base_url, model="vlm-1")
        async with aiohttp.ClientSession() as http:
            client = LlmClient(http, cfg, categories=CATS, api_key="sekrit")
            verdict = await client.judge(clip())
    assert verdict.unsafe and verdict.action == "pause" and verdict.label == "violence"
    assert llm.rejected == []
    (seen,) = llm.seen
    assert seen.path == "/v1/chat/completions" and seen.model == "vlm-1"
    assert seen.images == 2 and seen.authorization == "Bearer sekrit"
    assert "violence" in seen.prompt and "hello there" in seen.prompt
    schema = seen.body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["unsafe", "confidence", "label", "rationale", "action"]


async def test_ollama_protocol_request_and_verdict() -> None:
    async with FakeLlm(Reply(verdict=SAFE)) as llm:
        cfg = LlmConfig(base_url=llm.ollama_url, model="llava", provider="ollama")
        async with aiohttp.ClientSession() as http:
            verdict = await LlmClient(http, cfg, categories=CATS).judge(clip())
    assert verdict.unsafe is False
    (seen,) = llm.seen
    assert seen.path == "/api/chat" and seen.images == 2 and seen.authorization is None
    assert seen.body["stream"] is False and seen.body["format"]["type"] == "object"


@pytest.mark.parametrize(
    ("reply", "kind", "retryable"),
    [
        (Reply("status", status=500), "http_500", True),
        (Reply("status", status=503), "http_503", True),
        (Reply("status", status=400), "http_400", False),
        (Reply("bad_json"), "invalid_verdict", False),
        (Reply("bad_content"), "invalid_verdict", False),
        (Reply("off_schema"), "invalid_verdict", False),
        (Reply(delay_s=1.0), "timeout", True),
    ],
)
async def test_failures_are_classified(reply: Reply, kind: str, retryable: bool) -> None:
    async with FakeLlm(reply) as llm:
        cfg = LlmConfig(base_url=llm.base_url, model="m", timeout_s=0.3)
        async with aiohttp.ClientSession() as http:
            with pytest.raises(LlmError) as err:
                await LlmClient(http, cfg, categories=CATS).judge(clip())
    assert (err.value.kind, err.value.retryable) == (kind, retryable)


async def test_429_carries_retry_after() -> None:
    async with FakeLlm(Reply("status", status=429, retry_after="3")) as llm:
        cfg = LlmConfig(base_url=llm.base_url, model="m")
        async with aiohttp.ClientSession() as http:
            with pytest.raises(LlmError) as err:
                await LlmClient(http, cfg, categories=CATS).judge(clip())
    assert err.value.kind == "http_429" and err.value.retryable
    assert err.value.retry_after_s == 3.0


async def test_connection_refused_is_retryable() -> None:
    llm = FakeLlm()
    await llm.start()
    url = llm.base_url
    await llm.close()
    async with aiohttp.ClientSession() as http:
        client = LlmClient(http, LlmConfig(base_url=url, model="m"), categories=CATS)
        with pytest.raises(LlmError) as err:
            await client.judge(clip())
    assert err.value.kind == "connect" and err.value.retryable


# -- configuration ------------------------------------------------------------------


def test_documented_llm_and_webhooks_sections_equal_the_defaults() -> None:
    from livemod.config import load_config
    from livemod.paths import CONFIGS_DIR

    documented = load_config(CONFIGS_DIR / "livemod.yaml", environ={})
    defaults = load_config(None, environ={})
    assert documented.llm == defaults.llm and documented.webhooks == defaults.webhooks
    assert defaults.llm.base_url is None and defaults.webhooks.urls == []


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIVEMOD_LLM__BASE_URL": "http://127.0.0.1:1/v1"}, "model is required"),
        ({"LIVEMOD_LLM__BASE_URL": "ftp://x", "LIVEMOD_LLM__MODEL": "m"}, "http:// or https://"),
        ({"LIVEMOD_LLM__FALLBACK": "{violence: closed}"}, "llm.fallback.violence"),
        ({"LIVEMOD_LLM__PROVIDER": "vertex"}, "llm.provider"),
        ({"LIVEMOD_WEBHOOKS__URLS": '["hook.example"]'}, "urls[0]"),
        ({"LIVEMOD_WEBHOOKS__MIN_SEVERITY": "urgent"}, "webhooks.min_severity"),
    ],
)
def test_bad_escalation_settings_name_the_field(env: dict[str, str], needle: str) -> None:
    from livemod.config import load_config
    from livemod.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, environ=env)
    assert needle in str(err.value)


def test_backoff_is_jittered_exponential_and_honours_retry_after() -> None:
    import random

    from livemod.escalation.guard import GuardedLlm

    cfg = LlmConfig(retries=3, retry_base_s=0.2, retry_max_s=1.0)
    guard = GuardedLlm(cfg, clock=Clock(), rng=random.Random(7), on_change=lambda a, b: None)
    err = LlmError("boom", kind="http_500", retryable=True)
    for attempt, (lo, hi) in enumerate([(0.1, 0.2), (0.2, 0.4), (0.4, 0.8)]):
        delays = [guard.backoff(attempt, err) for _ in range(50)]
        assert all(d is not None and lo <= d <= hi for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert guard.backoff(3, err) is None  # retries spent
    assert guard.backoff(0, LlmError("no", kind="http_400")) is None
    slow = LlmError("429", kind="http_429", retryable=True, retry_after_s=0.5)
    assert guard.backoff(0, slow) == 0.5
    later = LlmError("429", kind="http_429", retryable=True, retry_after_s=2.0)
    assert guard.backoff(0, later) is None  # longer than retry_max_s: not waited for
