"""Circuit breaker transitions, on a hand-driven clock and then end to end."""

from __future__ import annotations

import asyncio

import pytest

from localllm.fallback.circuit_breaker import CircuitBreaker
from localllm.fallback.errors import CircuitOpen, UpstreamServerError, UpstreamUnreachable
from tests.fallback.conftest import upstream_settings
from tests.fallback.fake_upstream import Fault
from tests.fallback.streaming import QUESTION, collect


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tripped(clock: Clock, threshold: int = 3) -> CircuitBreaker:
    breaker = CircuitBreaker("up", failure_threshold=threshold, cooldown_s=30, clock=clock)
    for _ in range(threshold):
        assert breaker.admit() is False
        breaker.record_failure()
    return breaker


def test_opens_after_consecutive_failures_only():
    breaker = CircuitBreaker("up", failure_threshold=3, cooldown_s=30, clock=Clock())
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # a success in between starts the count again
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state.state == "closed" and breaker.state.consecutive_failures == 2
    breaker.record_failure()
    assert breaker.state.state == "open"


def test_open_refuses_with_time_left_until_half_open():
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 10
    state = breaker.state
    assert (state.name, state.state, state.seconds_until_half_open) == ("up", "open", 20)
    with pytest.raises(CircuitOpen) as caught:
        breaker.admit()
    assert caught.value.reason == "circuit_open" and caught.value.retry_after_s == 20
    assert "paused for another 20 s" in caught.value.message


def test_half_open_lets_exactly_one_probe_through_and_closes_on_success():
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 30
    assert breaker.state.state == "half_open" and breaker.state.seconds_until_half_open is None
    assert breaker.admit() is True
    with pytest.raises(CircuitOpen):
        breaker.admit()  # the probe is still out
    breaker.record_success()
    assert breaker.state.state == "closed" and breaker.state.consecutive_failures == 0
    assert breaker.admit() is False


def test_failed_probe_reopens_for_a_fresh_cool_down():
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 31
    assert breaker.admit() is True
    breaker.record_failure()
    assert breaker.state.state == "open" and breaker.state.seconds_until_half_open == 30
    clock.now += 29
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 1
    assert breaker.admit() is True


def test_abandoned_probe_hands_the_probe_on():
    clock = Clock()
    breaker = tripped(clock)
    clock.now += 30
    assert breaker.admit() is True
    breaker.record_abandoned(was_probe=True)
    assert breaker.admit() is True


async def test_breaker_end_to_end_against_a_failing_upstream(fake_upstream, make_registry):
    registry = make_registry(upstream_settings(fake_upstream, max_retries=1), breaker_failures=2,
                             breaker_cooldown_s=0.3)
    upstream = registry.get("fake-openai-compatible")
    fake_upstream.fail_always(Fault("http_500"))
    for _ in range(2):
        with pytest.raises(UpstreamServerError):
            await collect(upstream)
    assert len(fake_upstream.received) == 4  # two requests, one retry each
    with pytest.raises(CircuitOpen):
        await collect(upstream)
    assert len(fake_upstream.received) == 4  # refused without touching the upstream
    assert [s.state for s in registry.states()] == ["open"]

    await asyncio.sleep(0.35)
    with pytest.raises(UpstreamServerError):
        await collect(upstream)  # the probe fails ...
    assert len(fake_upstream.received) == 5  # ... after one attempt: a probe is never retried
    assert upstream.breaker.state.state == "open"

    fake_upstream.fail_always(None)
    await asyncio.sleep(0.35)
    text, _ = await collect(upstream)
    assert text and upstream.breaker.state.state == "closed"


async def test_mid_stream_failure_counts_and_a_client_leaving_does_not(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream, max_concurrency=1, first_byte_timeout_s=0.5)
                             ).get("fake-openai-compatible")
    fake_upstream.fail_next(Fault("reset", after_chunks=2))
    with pytest.raises(UpstreamUnreachable):
        await collect(upstream)
    assert upstream.breaker.state.consecutive_failures == 1

    stream = upstream.stream_chat(QUESTION, "sk-test")
    await anext(stream)
    await stream.aclose()  # the client went away after the first token
    assert upstream.breaker.state.consecutive_failures == 1  # no verdict either way
    text, _ = await collect(upstream)  # and its one slot is free again (else: UpstreamBusy)
    assert text
