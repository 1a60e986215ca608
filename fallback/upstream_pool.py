"""An upstream served by several endpoints (``base_urls``): scale-out behind one name.

Each endpoint is a ``ReliableUpstream`` of its own (its timeouts, retries, concurrency limit and circuit
breaker). A request goes to the endpoint with the fewest requests in flight among those whose circuit
is not open (ties in turn); if it fails before its first event, the next endpoint is tried, and only when every one
has failed does the pipeline answer locally. An endpoint whose circuit opened is tried again after the
breaker's cooldown (its half-open probe), so a restarted server comes back by itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from localllm.fallback.circuit_breaker import BreakerState
from localllm.fallback.errors import UpstreamError
from localllm.fallback.providers import StreamEvent, UpstreamRequest
from localllm.fallback.reliability import ReliableUpstream

log = logging.getLogger(__name__)


@dataclass
class Endpoint:
    url: str
    upstream: ReliableUpstream
    in_flight: int = 0


class PooledUpstream:
    """Several endpoints of one upstream, seen by the pipeline as one ``ReliableUpstream``."""

    def __init__(self, endpoints: list[Endpoint]):
        self.endpoints = endpoints
        first = endpoints[0].upstream
        self.provider, self.settings, self.name = first.provider, first.settings, first.name
        self.breaker = _PoolBreaker(self)
        self._turn = 0  # ties go round in turn, so sequential requests spread too

    def __repr__(self) -> str:
        return f"PooledUpstream({self.name!r}, {[e.url for e in self.endpoints]})"

    def endpoint_states(self) -> list[tuple[str, BreakerState, int]]:
        """(url, circuit state, requests in flight) of each endpoint."""
        return [(e.url, e.upstream.breaker.state, e.in_flight) for e in self.endpoints]

    async def stream_chat(self, request: UpstreamRequest, api_key: str | None) -> AsyncIterator[StreamEvent]:
        tried: set[str] = set()
        failure: UpstreamError | None = None
        while True:
            endpoint = self._pick(tried)
            if endpoint is None:
                raise failure or UpstreamError(self.name, f"Upstream {self.name!r} has no endpoint to try.")
            tried.add(endpoint.url)
            endpoint.in_flight += 1
            events = endpoint.upstream.stream_chat(request, api_key).__aiter__()
            try:
                try:
                    first = await anext(events)
                except UpstreamError as exc:
                    failure = exc
                    log.info("upstream %s: endpoint %s failed before its first token (%s); trying the next",
                             self.name, endpoint.url, exc.reason)
                    continue
                yield first
                async for event in events:
                    yield event
                return
            finally:
                endpoint.in_flight -= 1
                await events.aclose()

    def _pick(self, tried: set[str]) -> Endpoint | None:
        """The untried endpoint with the fewest requests in flight, open circuits last (they refuse at once
        until their cooldown ends, then take one probe)."""
        count = len(self.endpoints)
        left = [(index, e) for index, e in enumerate(self.endpoints) if e.url not in tried]
        if not left:
            return None
        index, chosen = min(left, key=lambda item: (item[1].upstream.breaker.state.state == "open",
                                                    item[1].in_flight, (item[0] - self._turn) % count))
        self._turn = (index + 1) % count
        return chosen


class _PoolBreaker:
    """The pool's circuit as `localllm status` shows it: open only when every endpoint's is."""

    def __init__(self, pool: PooledUpstream):
        self.pool = pool

    @property
    def state(self) -> BreakerState:
        states = [e.upstream.breaker.state for e in self.pool.endpoints]
        if all(s.state == "open" for s in states):
            name = "open"
        elif all(s.state == "closed" for s in states):
            name = "closed"
        else:
            name = "half_open"  # some endpoints fail: the pool works, with less room
        waits = [s.seconds_until_half_open for s in states if s.seconds_until_half_open is not None]
        return BreakerState(self.pool.name, name, sum(s.consecutive_failures for s in states),
                            min(waits) if name == "open" and waits else None)
