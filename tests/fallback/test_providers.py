"""Providers against the fake upstream: text and usage come through, finish reasons
map, requests go out in each wire format, and Anthropic is translated both ways."""

from __future__ import annotations

import dataclasses

import pytest

from localllm.config.upstreams import UpstreamSettings
from localllm.errors import InvalidRequest
from localllm.fallback.anthropic_translation import DEFAULT_MAX_TOKENS, AnthropicProvider, split_system
from localllm.fallback.errors import UpstreamBadResponse, UpstreamRejected
from localllm.fallback.openai_translation import OpenAIChatProvider
from tests.fallback.conftest import upstream_settings
from tests.fallback.fake_upstream import Fault
from tests.fallback.streaming import QUESTION, collect

FULL_TEXT = "Paris is the capital of France."


async def test_openai_compatible_streams_text_usage_and_stop(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    assert isinstance(upstream.provider, OpenAIChatProvider)
    text, finished = await collect(upstream, api_key="sk-abc")
    assert text == FULL_TEXT
    assert finished.finish_reason == "stop"
    assert (finished.prompt_tokens, finished.completion_tokens) == (fake_upstream.prompt_tokens, 6)
    sent = fake_upstream.received[0]
    assert sent.headers["Authorization"] == "Bearer sk-abc"
    assert sent.body["model"] == "fake-model"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"] == QUESTION.messages


async def test_openai_compatible_sends_sampling_and_maps_length(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    request = dataclasses.replace(QUESTION, max_tokens=2, temperature=0.0, top_p=0.5, stop=["\n"], seed=7)
    text, finished = await collect(upstream, request, api_key=None)
    assert (text, finished.finish_reason, finished.completion_tokens) == ("Paris is", "length", 2)
    body = fake_upstream.received[0].body
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop", "seed")} == {
        "max_tokens": 2, "temperature": 0.0, "top_p": 0.5, "stop": ["\n"], "seed": 7}
    assert "Authorization" not in fake_upstream.received[0].headers  # no key: an on-prem engine without auth


async def test_openai_kind_asks_with_max_completion_tokens(fake_upstream, make_registry):
    settings = upstream_settings(fake_upstream, kind="openai", name="openai")
    upstream = make_registry(settings).get("openai")
    text, finished = await collect(upstream, dataclasses.replace(QUESTION, max_tokens=3))
    assert (text, finished.finish_reason) == ("Paris is the", "length")
    assert fake_upstream.received[0].body["max_completion_tokens"] == 3
    assert "max_tokens" not in fake_upstream.received[0].body


async def test_server_that_ignores_include_usage_reports_zero_tokens(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("ignore_usage"))
    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    text, finished = await collect(upstream)
    assert text == FULL_TEXT
    assert (finished.finish_reason, finished.prompt_tokens, finished.completion_tokens) == ("stop", 0, 0)


async def test_anthropic_request_translation(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    assert isinstance(upstream.provider, AnthropicProvider)
    text, finished = await collect(upstream, dataclasses.replace(QUESTION, temperature=1.6, top_p=0.9, seed=3),
                                   api_key="sk-ant-xyz")
    assert text == FULL_TEXT
    assert (finished.finish_reason, finished.prompt_tokens, finished.completion_tokens) == (
        "stop", fake_upstream.prompt_tokens, 6)
    sent = fake_upstream.received[0]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-xyz"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent.headers
    assert sent.body["system"] == "Answer in one sentence."
    assert sent.body["messages"] == [{"role": "user", "content": "What is the capital of France?"}]
    assert sent.body["max_tokens"] == DEFAULT_MAX_TOKENS
    assert sent.body["temperature"] == 1.0  # clamped to Anthropic's range
    assert "top_p" not in sent.body and "seed" not in sent.body


async def test_anthropic_max_tokens_maps_to_length(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    request = dataclasses.replace(QUESTION, max_tokens=4, stop=["END"])
    text, finished = await collect(upstream, request)
    assert (text, finished.finish_reason, finished.completion_tokens) == ("Paris is the capital", "length", 4)
    assert fake_upstream.received[0].body["stop_sequences"] == ["END"]
    assert fake_upstream.received[0].body["max_tokens"] == 4


@pytest.mark.parametrize(("stop_reason", "expected"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), (None, "stop"), ("something_new", "stop")])
def test_anthropic_stop_reasons_in_openai_terms(stop_reason, expected):
    settings = UpstreamSettings(name="claude", kind="anthropic", trust="cloud", model="claude-x")
    assert AnthropicProvider(settings, session=lambda: None).finish_reason(stop_reason) == expected


def test_split_system_joins_system_and_developer_messages():
    system, turns = split_system([{"role": "system", "content": "A."}, {"role": "user", "content": "Hi"},
                                  {"role": "developer", "content": "B."}, {"role": "assistant", "content": "Yo"}])
    assert system == "A.\n\nB."
    assert turns == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert split_system([{"role": "user", "content": "Hi"}])[0] is None
    with pytest.raises(InvalidRequest):
        split_system([{"role": "function", "content": "{}"}])


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_truncated_stream_is_a_bad_response(fake_upstream, make_registry, kind):
    fake_upstream.fail_next(Fault("truncated", after_chunks=2))
    upstream = make_registry(upstream_settings(fake_upstream, kind=kind)).get(f"fake-{kind}")
    events: list = []
    with pytest.raises(UpstreamBadResponse) as caught:
        await collect(upstream, into=events)
    assert caught.value.reason == "bad_response"
    assert "".join(e.text for e in events) == "Paris is"
    assert len(fake_upstream.received) == 1  # text had been passed on: no retry


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_malformed_json_is_a_bad_response(fake_upstream, make_registry, kind):
    fake_upstream.fail_next(Fault("malformed_json", after_chunks=1))
    upstream = make_registry(upstream_settings(fake_upstream, kind=kind)).get(f"fake-{kind}")
    with pytest.raises(UpstreamBadResponse, match="not JSON"):
        await collect(upstream)


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_rejected_key_is_not_retried(fake_upstream, make_registry, kind):
    fake_upstream.fail_next(Fault("http_401"))
    upstream = make_registry(upstream_settings(fake_upstream, kind=kind)).get(f"fake-{kind}")
    with pytest.raises(UpstreamRejected) as caught:
        await collect(upstream, api_key="sk-wrong")
    assert caught.value.http_status == 401 and caught.value.reason == "http_4xx"
    assert "localllm keys set fake-" in caught.value.message
    assert "sk-wrong" not in caught.value.message  # the fake echoed it; scrubbed
    assert len(fake_upstream.received) == 1
    assert upstream.breaker.state.state == "closed" and upstream.breaker.state.consecutive_failures == 0


async def test_anthropic_overloaded_event_before_text_is_retried(fake_upstream, make_registry):
    fake_upstream.fail_next(Fault("error_event"))
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    text, _ = await collect(upstream)
    assert text == FULL_TEXT
    assert len(fake_upstream.received) == 2
