"""A circuit breaker and a token bucket: pure, with the clock injected.

The breaker is closed while the LLM answers. ``failures`` failed calls within
``window_s`` open it; while open every call is refused at once (the caller takes
its fallback) until ``cooldown_s`` has passed. Then it is half-open: exactly one
probe call goes through; its success closes the breaker, its failure opens it
for another cooldown.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]

STATE_VALUE: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
"""The gauge value of each state (``livemod_llm_breaker_state``)."""

Listener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Counts failures and decides whether the next call may go out."""

    def __init__(
        self,
        *,
        failures: int,
        window_s: float,
        cooldown_s: float,
        clock: Callable[[], float],
        on_change: Listener | None = None,
    ) -> None:
        if failures < 1 or window_s <= 0 or cooldown_s <= 0:
            raise ValueError("failures >= 1, window_s > 0 and cooldown_s > 0 are required")
        self._threshold = failures
        self._window_s = window_s
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._failures: deque[float] = deque()
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The state now (an open breaker whose cooldown passed reads half-open)."""
        if self._state == "open" and self._clock() - self._opened_at >= self._cooldown_s:
            self._set("half_open")
        return self._state

    def allow(self) -> bool:
        """Whether a call may start now. In half-open only one probe is let through."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures.clear()
        self._probing = False
        if self._state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        now = self._clock()
        if self._state == "half_open":
            self._probing = False
            self._open(now)
            return
        if self._state == "open":
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self._window_s:
            self._failures.popleft()
        if len(self._failures) >= self._threshold:
            self._open(now)

    def release_probe(self) -> None:
        """A probe ended without an answer either way (cancelled): let another try."""
        self._probing = False

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._failures.clear()
        self._set("open")

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if old != state and self._on_change is not None:
            self._on_change(old, state)


class TokenBucket:
    """``rate`` calls per second on average, bursts of up to ``burst``.

    ``reserve`` takes a token and returns how long the caller must wait before
    using it; a rate of 0 means unlimited.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate >= 0 and burst >= 1 are required")
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def reserve(self) -> float:
        if self._rate == 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        self._tokens -= 1.0
        # A negative balance is a queue of reservations: each waits its turn.
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate
