"""Timeouts, retries, the circuit breaker and the concurrency limit around one provider.

Per attempt: the first event must arrive within ``first_byte_timeout_s``, each
later one within the same time of the previous (longer silence: ``stalled``),
and the whole attempt within ``timeout_s``; connecting has its own short limit
in the provider. Attempts that fail with a retryable error (connection refused
or reset, 429, 5xx) are retried with jittered exponential backoff, or after the
upstream's Retry-After, but only until the first event has been handed to the
caller: after that, text already reached the client and a retry would repeat it,
so the error goes to the caller mid-stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from localllm.fallback.circuit_breaker import CircuitBreaker
from localllm.fallback.errors import UpstreamBadResponse, UpstreamBusy, UpstreamError, UpstreamStalled, UpstreamTimeout
from localllm.fallback.providers import Progress, Provider, StreamEvent, UpstreamRequest
from localllm.vocabulary import Finished

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    # An upstream asking for a longer pause than this is treated as down for this request:
    # answering locally now beats making the client wait.
    max_retry_after_s: float = 30.0

    def delay(self, retry: int, error: UpstreamError) -> float | None:
        """Seconds before retry number ``retry`` (1, 2, ...), or None to give up."""
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            return error.retry_after_s + random.uniform(0, self.base_delay_s / 2)
        # "Full jitter": spreads the retries of many clients hit by the same outage.
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1)))


class ReliableUpstream:
    """One upstream as the pipeline sees it: ``stream_chat`` with every safeguard applied."""

    def __init__(self, provider: Provider, *, retry: RetryPolicy | None = None,
                 breaker: CircuitBreaker | None = None):
        self.provider = provider
        self.settings = provider.settings
        self.name = provider.name
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or CircuitBreaker(self.name)
        self._slots = asyncio.Semaphore(self.settings.max_concurrency)

    def __repr__(self) -> str:
        return f"ReliableUpstream({self.provider!r})"

    async def stream_chat(self, request: UpstreamRequest, api_key: str | None) -> AsyncIterator[StreamEvent]:
        is_probe = self.breaker.admit()
        verdict = False  # set once the breaker has been told success or failure
        events: AsyncIterator[StreamEvent] | None = None
        try:
            await self._take_slot()
        except BaseException:
            self.breaker.record_abandoned(is_probe)
            raise
        try:
            events, event, deadline = await self._first_event(request, api_key, retries=0 if is_probe else None)
            while True:
                if isinstance(event, Progress):  # alive, nothing to pass on yet: the stall timer starts again
                    event = await self._next_event(events, deadline)
                    continue
                if isinstance(event, Finished):
                    # Told before the caller sees the end, which it may never ask for.
                    self.breaker.record_success()
                    verdict = True
                yield event
                if verdict:
                    return
                event = await self._next_event(events, deadline)
        except UpstreamError as exc:
            if not verdict:
                if exc.reason == "http_4xx":
                    self.breaker.record_success()  # it answered: the request was wrong, not the upstream
                elif getattr(exc, "offline", False):
                    self.breaker.trip()
                else:
                    self.breaker.record_failure()
                verdict = True
            raise
        finally:
            self._slots.release()
            if not verdict:
                self.breaker.record_abandoned(is_probe)
            if events is not None:
                await events.aclose()  # a caller that stops early must not leave the connection open

    async def _take_slot(self) -> None:
        # Waiting longer than we would wait for a first token only delays the local answer.
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise UpstreamBusy(self.name, f"Upstream {self.name!r} already has {self.settings.max_concurrency} "
                               "requests in flight; raise max_concurrency in [[upstreams]] if it can take more."
                               ) from None

    async def _first_event(self, request: UpstreamRequest, api_key: str | None, retries: int | None
                           ) -> tuple[AsyncIterator[StreamEvent], StreamEvent, float]:
        """Attempts until one yields its first event: (the events, that event, the attempt's deadline)."""
        allowed = self.settings.max_retries if retries is None else retries
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            deadline = loop.time() + self.settings.timeout_s
            events = self.provider.stream_chat(request, api_key)
            try:
                return events, await self._next_event(events, deadline, first=True), deadline
            except UpstreamError as exc:
                await events.aclose()
                delay = self.retry.delay(attempt, exc) if exc.retryable and attempt <= allowed else None
                if delay is None:
                    raise
                log.warning("upstream %s: attempt %d failed (%s); retrying in %.2f s",
                            self.name, attempt, exc.reason, delay)
                await asyncio.sleep(delay)

    async def _next_event(self, events: AsyncIterator[StreamEvent], deadline: float,
                          first: bool = False) -> StreamEvent:
        """The next event before the attempt's ``deadline`` and the first-byte/stall limit, whichever is sooner."""
        loop = asyncio.get_running_loop()
        gap_by = loop.time() + self.settings.first_byte_timeout_s
        try:
            async with asyncio.timeout_at(min(deadline, gap_by)):
                return await anext(events)
        except TimeoutError:
            pass
        except StopAsyncIteration:
            raise UpstreamBadResponse(self.name, f"Upstream {self.name!r} ended its answer without finishing it."
                                      ) from None
        if loop.time() >= deadline:
            raise UpstreamTimeout(self.name, f"Upstream {self.name!r} took longer than timeout_s = "
                                  f"{self.settings.timeout_s:g} s to answer.")
        if first:
            raise UpstreamTimeout(self.name, f"Upstream {self.name!r} sent nothing within first_byte_timeout_s = "
                                  f"{self.settings.first_byte_timeout_s:g} s; raise it in [[upstreams]] if the "
                                  "upstream is just slow.")
        raise UpstreamStalled(self.name, f"Upstream {self.name!r} stopped sending for "
                              f"{self.settings.first_byte_timeout_s:g} s in the middle of an answer.")
