"""One verdict through the circuit breaker, the rate limit and the retries.

Timeouts, 429, 5xx and broken connections are retried up to ``llm.retries``
times with jittered exponential backoff; a ``Retry-After`` is honoured up to
``llm.retry_max_s`` and a longer one is not waited for. Every failed attempt
counts towards the breaker; while it is open nothing is sent.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from livemod.config import LlmConfig
from livemod.escalation.breaker import CircuitBreaker, Listener, TokenBucket
from livemod.escalation.llm import LlmClient, LlmError
from livemod.escalation.verdict import Verdict


class GuardedLlm:
    """Wraps an ``LlmClient`` (set with ``attach`` once the daemon starts)."""

    def __init__(
        self,
        config: LlmConfig,
        *,
        clock: Callable[[], float],
        rng: random.Random,
        on_change: Listener,
    ) -> None:
        self._cfg = config
        self._rng = rng
        self.breaker = CircuitBreaker(
            failures=config.breaker_failures,
            window_s=config.breaker_window_s,
            cooldown_s=config.breaker_cooldown_s,
            clock=clock,
            on_change=on_change,
        )
        self._bucket = TokenBucket(config.rate_per_s, config.rate_burst, clock)
        self._client: LlmClient | None = None

    def attach(self, client: LlmClient) -> None:
        self._client = client

    @property
    def client(self) -> LlmClient:
        if self._client is None:
            raise RuntimeError("no LLM client attached")
        return self._client

    async def ask(self, body: dict[str, Any]) -> Verdict:
        """A verdict, or ``LlmError`` (``kind="breaker_open"`` when refused)."""
        attempt = 0
        while True:
            if not self.breaker.allow():
                raise LlmError("circuit breaker is open", kind="breaker_open")
            try:
                wait = self._bucket.reserve()
                if wait > 0:
                    await asyncio.sleep(wait)
                verdict = await self.client.send(body)
            except LlmError as exc:
                self.breaker.record_failure()
                delay = self.backoff(attempt, exc)
                if delay is None:
                    raise
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self.breaker.release_probe()
                raise
            self.breaker.record_success()
            return verdict

    def backoff(self, attempt: int, exc: LlmError) -> float | None:
        """Seconds to wait before retry ``attempt + 1``, or ``None`` to give up."""
        cfg = self._cfg
        if not exc.retryable or attempt >= cfg.retries:
            return None
        if exc.retry_after_s is not None:
            return exc.retry_after_s if exc.retry_after_s <= cfg.retry_max_s else None
        ceiling = min(cfg.retry_max_s, cfg.retry_base_s * (2.0**attempt))
        # Half fixed, half random: spreads the retries of many clips apart.
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
