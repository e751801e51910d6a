"""Requests per second per key: a token bucket for each caller identity."""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Lets each identity make ``rate`` requests a second on average, ``burst`` at once.

    Buckets live in this process: with several replicas, each one limits on
    its own, so a key's total is up to ``rate`` times the number of replicas.
    The number of buckets is bounded by the number of configured keys.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        #: identity -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, identity: str) -> float:
        """Spend one request; 0.0 if allowed, else the seconds until one would be."""
        now = self._clock()
        tokens, then = self._buckets.get(identity, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[identity] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[identity] = (tokens - 1.0, now)
        return 0.0
