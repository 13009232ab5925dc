"""Request- and token-rate limits for the cloud client (requests/min, tokens/min).

Each limit is a token bucket that may go into debt: a caller takes what it needs at
once and then sleeps off the debt. Taking first and sleeping after makes the arithmetic
one short critical section under a thread lock, so one limiter is shared correctly by
every event loop and thread that uses the same client. The burst is 10 seconds' worth
(providers count per minute but dislike a whole minute's quota in one second); a request
larger than the burst still goes, after the bucket refills.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from endcloud.errors import ConfigError

BURST_SECONDS = 10.0


class _Bucket:
    def __init__(self, per_minute: float, clock: Callable[[], float]):
        if per_minute <= 0:
            raise ConfigError(f"rate limits must be > 0 per minute, got {per_minute!r}")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_SECONDS)
        self.level = self.capacity
        self.clock = clock
        self.last = clock()

    def take(self, amount: float) -> float:
        """Take `amount`; return how long the caller must wait to have paid for it."""
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.last) * self.rate)
        self.last = now
        # A request bigger than the burst waits for a full bucket, then takes all of it.
        amount = min(amount, self.capacity)
        self.level -= amount
        return max(0.0, -self.level / self.rate)


class RateLimiter:
    """`await limiter.acquire(tokens)` before each request; returns seconds waited."""

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._lock = threading.Lock()
        self._requests = _Bucket(requests_per_minute, clock) if requests_per_minute else None
        self._tokens = _Bucket(tokens_per_minute, clock) if tokens_per_minute else None

    @property
    def active(self) -> bool:
        return self._requests is not None or self._tokens is not None

    def reserve(self, tokens: int) -> float:
        """Take one request and `tokens` tokens; return the wait owed (no sleeping)."""
        with self._lock:
            wait = 0.0
            if self._requests is not None:
                wait = max(wait, self._requests.take(1))
            if self._tokens is not None:
                wait = max(wait, self._tokens.take(tokens))
            return wait

    async def acquire(self, tokens: int = 0) -> float:
        wait = self.reserve(tokens)
        if wait > 0:
            await asyncio.sleep(wait)
        return wait
