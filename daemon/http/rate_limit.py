"""Requests per minute per API token (``server.rate_limit_per_minute``): a token bucket each.

A bucket holds a minute's allowance and refills continuously, so a client may
burst up to the limit and then goes at the limit's pace. Callers without a token
(a loopback daemon with none set) share one bucket.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from localllm.errors import RateLimited

# Buckets kept: one per token in use, so this only bounds a daemon with many namespace tokens.
MAX_BUCKETS = 4096


class RateLimiter:
    def __init__(self, per_minute: int, *, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> None:
        """Count one request for ``key``; raises RateLimited (429) when its allowance is spent."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        tokens, at = self._buckets.pop(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) * 60.0 / self.per_minute)
            raise RateLimited(f"More than {self.per_minute} requests a minute with this token; retry in {wait} s "
                              "(server.rate_limit_per_minute).", retry_after_s=max(wait, 1))
        self._buckets[key] = (tokens - 1.0, now)
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
