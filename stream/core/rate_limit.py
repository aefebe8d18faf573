"""Token buckets per key (a session, a client address): how often a caller may
ask for something that costs a shared, finite resource (a tracking number from
the pool). Pure: the caller passes the clock.

A key gets ``burst`` requests at once and then ``per_minute`` a minute. At most
``max_keys`` keys are remembered (the least recently used go first), so a flood
of made-up keys cannot grow memory; a forgotten key starts again with a full
bucket, which a flood from one client address cannot exploit while the address
itself is limited.
"""

from __future__ import annotations

from collections import OrderedDict


class RateLimit:
    def __init__(self, per_minute: float, burst: int, max_keys: int = 100_000) -> None:
        self.rate = per_minute / 60.0  # tokens a second
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def retry_after(self, key: str, now: float) -> float:
        """0 if ``key`` may go on now (and take a token), else seconds until it may."""
        if self.rate <= 0:
            return 0.0  # 0 a minute: no limit
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def retry_seconds(wait: float) -> int:
    """A Retry-After value for ``wait`` seconds: whole seconds, at least 1, rounded up."""
    return max(1, round(wait + 0.5))
