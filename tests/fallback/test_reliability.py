"""Retries, timeouts and the concurrency limit, against the fake upstream's faults."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.errors import (
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamStalled,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from localllm.fallback.reliability import RetryPolicy
from tests.fallback.conftest import upstream_settings
from tests.fallback.fake_upstream import Fault
from tests.fallback.streaming import collect

FULL_TEXT = "Paris is the capital of France."


def one_upstream(make_registry, server, **overrides):
    return make_registry(upstream_settings(server, **overrides)).get("fake-openai-compatible")


async def test_429_waits_for_retry_after_then_succeeds(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("http_429", retry_after="0.6"))
    upstream = one_upstream(make_registry, fake_upstream)
    started = time.monotonic()
    text, _ = await collect(upstream)
    assert text == FULL_TEXT
    assert time.monotonic() - started >= 0.6  # FAST_RETRY's own backoff is at most 0.1 s
    assert len(fake_upstream.received) == 2


async def test_429_asking_for_too_long_a_pause_is_not_waited_for(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("http_429", retry_after="120"))
    upstream = one_upstream(make_registry, fake_upstream)
    started = time.monotonic()
    with pytest.raises(UpstreamRateLimited) as caught:
        await collect(upstream)
    assert time.monotonic() - started < 1
    assert caught.value.retry_after_s == 120 and caught.value.reason == "http_429"
    assert len(fake_upstream.received) == 1


async def test_500_then_success(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("http_500"))
    text, finished = await collect(one_upstream(make_registry, fake_upstream))
    assert text == FULL_TEXT and finished.finish_reason == "stop"
    assert len(fake_upstream.received) == 2


async def test_persistent_500_gives_up_after_max_retries(fake_upstream, make_registry):
    fake_upstream.fail_always(Fault("http_500"))
    with pytest.raises(UpstreamServerError) as caught:
        await collect(one_upstream(make_registry, fake_upstream, max_retries=2))
    assert caught.value.reason == "http_5xx" and caught.value.http_status == 500
    assert len(fake_upstream.received) == 3


async def test_connection_reset_before_the_answer_is_retried(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("reset"))
    text, _ = await collect(one_upstream(make_registry, fake_upstream))
    assert text == FULL_TEXT
    assert len(fake_upstream.received) == 2


async def test_no_retry_once_text_was_passed_on(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("reset", after_chunks=2))
    events: list = []
    with pytest.raises(UpstreamUnreachable) as caught:
        await collect(one_upstream(make_registry, fake_upstream), into=events)
    assert caught.value.reason == "connect"
    assert "".join(e.text for e in events) == "Paris is"  # what the client already has; never repeated
    assert len(fake_upstream.received) == 1


def backoff_delays(policy: RetryPolicy) -> list[float]:
    return [policy.delay(retry, UpstreamServerError("x", "boom")) for retry in (1, 2, 3, 4, 5)]


def test_backoff_is_jittered_and_grows_to_its_cap():
    policy = RetryPolicy(base_delay_s=1, max_delay_s=4)
    runs = [backoff_delays(policy) for _ in range(200)]
    for retry, cap in enumerate([1, 2, 4, 4, 4]):
        delays = [run[retry] for run in runs]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8 and len(set(delays)) > 100  # spread over the range, not fixed
    assert policy.delay(1, UpstreamRateLimited("x", "slow down", retry_after_s=2)) >= 2


async def test_slow_first_byte_times_out_on_time(fake_upstream, make_registry):
    fake_upstream.fail_always(Fault("slow_first_byte", delay_s=10))
    upstream = one_upstream(make_registry, fake_upstream, first_byte_timeout_s=0.4)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await collect(upstream)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.5
    assert caught.value.reason == "timeout" and "first_byte_timeout_s" in caught.value.message
    assert len(fake_upstream.received) == 1  # a slow upstream is not asked again: the local answer is faster


async def test_stall_mid_stream_is_reported_as_stalled(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("stall", after_chunks=2, delay_s=10))
    upstream = one_upstream(make_registry, fake_upstream, first_byte_timeout_s=0.4)
    events: list = []
    started = time.monotonic()
    with pytest.raises(UpstreamStalled) as caught:
        await collect(upstream, into=events)
    assert time.monotonic() - started < 1.5
    assert caught.value.reason == "stalled"
    assert "".join(e.text for e in events) == "Paris is"


async def test_total_timeout_cuts_a_slow_trickle(fake_upstream, make_registry):
    fake_upstream.chunk_delay_s = 0.2  # every gap is within first_byte_timeout_s; the whole is not
    upstream = one_upstream(make_registry, fake_upstream, first_byte_timeout_s=1, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="timeout_s = 0.5"):
        await collect(upstream)
    assert time.monotonic() - started < 1.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_closed_port_fails_fast(make_registry):
    settings = UpstreamSettings(name="gone", kind="openai-compatible", base_url=f"http://127.0.0.1:{closed_port()}/v1",
                                trust="onprem", model="m", max_retries=2)
    upstream = make_registry(settings).get("gone")
    started = time.monotonic()
    with pytest.raises(UpstreamUnreachable) as caught:
        await collect(upstream)
    assert time.monotonic() - started < 1.0  # three refused attempts with FAST_RETRY backoff
    assert caught.value.reason == "connect" and "Could not reach upstream 'gone'" in caught.value.message


@pytest.fixture
def unanswered_port():
    """A port whose SYNs go unanswered, like a host on a network that is down: a listener
    with a backlog of 0 whose one queue slot is already taken (Linux drops further SYNs)."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


async def test_unanswered_connect_fails_within_connect_timeout_without_retry(make_registry, unanswered_port):
    settings = UpstreamSettings(name="offline", kind="openai-compatible", base_url=f"http://127.0.0.1:{unanswered_port}",
                                trust="onprem", model="m", connect_timeout_s=0.3, max_retries=2)
    started = time.monotonic()
    with pytest.raises(UpstreamUnreachable) as caught:
        await collect(make_registry(settings).get("offline"))
    assert 0.3 <= time.monotonic() - started < 1.2  # one attempt: retrying would triple an offline box's wait
    assert "no connection within 0.3 s" in caught.value.message


async def test_concurrency_limit_holds_requests_back(fake_upstream, make_registry):
    fake_upstream.chunk_delay_s = 0.03
    upstream = one_upstream(make_registry, fake_upstream, max_concurrency=2)
    results = await asyncio.gather(*(collect(upstream) for _ in range(6)))
    assert [text for text, _ in results] == [FULL_TEXT] * 6
    assert fake_upstream.max_in_flight == 2


async def test_full_upstream_turns_away_after_first_byte_timeout(fake_upstream, make_registry):
    fake_upstream.chunk_delay_s = 0.15  # the first request holds the only slot for about 1 s
    upstream = one_upstream(make_registry, fake_upstream, max_concurrency=1, first_byte_timeout_s=0.3)
    first = asyncio.create_task(collect(upstream))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(UpstreamBusy) as caught:
        await collect(upstream)
    assert 0.3 <= time.monotonic() - started < 1.0
    assert caught.value.reason == "busy"
    # Our own limit, not a failure of the upstream: the breaker must not count it.
    assert upstream.breaker.state.consecutive_failures == 0
    assert (await first)[0] == FULL_TEXT
    assert len(fake_upstream.received) == 1


async def test_an_offline_upstream_is_skipped_at_once_after_one_timeout(make_registry, unanswered_port):
    from localllm.fallback.errors import CircuitOpen

    settings = UpstreamSettings(name="offline", kind="openai-compatible", base_url=f"http://127.0.0.1:{unanswered_port}",
                                trust="onprem", model="m", connect_timeout_s=0.3, max_retries=2)
    upstream = make_registry(settings).get("offline")
    with pytest.raises(UpstreamUnreachable) as first:
        await collect(upstream)
    assert first.value.offline
    started = time.monotonic()
    with pytest.raises(CircuitOpen):
        await collect(upstream)
    assert time.monotonic() - started < 0.05  # no second connect timeout
    assert upstream.breaker.state.state == "open"
