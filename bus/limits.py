"""Rate limits: a token bucket per peer, so one noisy client cannot starve the others."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float = field(default_factory=time.monotonic)


class PeerRateLimit:
    """Allows each peer ``rate`` messages per second on average, in bursts of ``burst``."""

    def __init__(self, rate: float, burst: float, max_peers: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._buckets: dict[bytes, _Bucket] = {}

    def allow(self, peer: bytes, now: float | None = None) -> bool:
        """Take one token from ``peer``'s bucket; False when it is empty."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self.max_peers:
                self.prune(now)
            bucket = self._buckets[peer] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def prune(self, now: float) -> None:
        """Forget peers whose buckets have refilled (they have been quiet)."""
        full_after = self.burst / self.rate
        self._buckets = {
            peer: b for peer, b in self._buckets.items() if now - b.updated < full_after
        }
