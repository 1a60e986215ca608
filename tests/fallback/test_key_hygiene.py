"""A key reaches the upstream's auth header and nothing else: every fault is run with a
sentinel key, and every log record and every exception (message, repr, traceback,
chained causes, OpenAI-shaped body) is searched for it."""

from __future__ import annotations

import json
import logging
import traceback

import pytest

from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.errors import UpstreamError
from tests.fallback.conftest import SENTINEL_KEY, upstream_settings
from tests.fallback.fake_upstream import Fault
from tests.fallback.streaming import collect

FAULTS = [
    None,
    Fault("http_401"),  # the fake echoes the key in its error body, as some APIs do
    Fault("http_500"),
    Fault("http_429", retry_after="0"),
    Fault("reset"),
    Fault("reset", after_chunks=1),
    Fault("stall", after_chunks=1, delay_s=5),
    Fault("truncated", after_chunks=1),
    Fault("malformed_json", after_chunks=0),
    Fault("slow_first_byte", delay_s=5),
    Fault("error_event"),
]


def every_text_of(exc: BaseException) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # __context__ too: `from None` only hides it
        seen.add(id(exc))
        texts += [str(exc), repr(exc), repr(exc.args)]
        if isinstance(exc, UpstreamError):
            texts.append(json.dumps(exc.to_openai()))
        exc = exc.__cause__ or exc.__context__
    return texts


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_sentinel_key_never_leaks(fake_upstream, make_registry, caplog, kind):
    caplog.set_level(logging.DEBUG)
    gone = UpstreamSettings(name="gone", kind="openai-compatible", base_url="http://127.0.0.1:1/v1",
                            trust="onprem", model="m", max_retries=1)
    registry = make_registry(upstream_settings(fake_upstream, kind=kind, first_byte_timeout_s=0.3, max_retries=1),
                             gone, breaker_failures=3, breaker_cooldown_s=60)
    upstream = registry.get(f"fake-{kind}")
    texts: list[str] = [repr(registry), repr(upstream), repr(upstream.provider), repr(upstream.settings)]
    errors = 0
    for fault in FAULTS + [Fault("http_500")] * 4:  # the last ones open the breaker: CircuitOpen too
        if fault is not None and (fault.kind != "error_event" or kind == "anthropic"):
            fake_upstream.fail_next(fault)
        try:
            await collect(upstream, api_key=SENTINEL_KEY)
        except UpstreamError as exc:
            errors += 1
            texts += every_text_of(exc)
    with pytest.raises(UpstreamError) as caught:
        await collect(registry.get("gone"), api_key=SENTINEL_KEY)
    texts += every_text_of(caught.value)

    assert errors >= 8 and upstream.breaker.state.state == "open"  # the faults did strike
    assert any(SENTINEL_KEY in value for r in fake_upstream.received for value in r.headers.values())
    assert "Incorrect API key provided: ***" in "\n".join(texts)  # the echoed key was there, and masked
    texts += [record.getMessage() for record in caplog.records]
    texts += [caplog.text]
    assert len(caplog.records) > 5
    leaks = [text for text in texts if SENTINEL_KEY in text]
    assert not leaks, leaks[0]
