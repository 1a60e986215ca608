"""Asking the daemon for an upstream model: proxied through, or answered locally when the
upstream fails before its first byte. Fake cloud on 127.0.0.1, official openai SDK as client."""

from __future__ import annotations

import json

import keyring
import openai
import pytest

from localllm.config import DEFAULT_MODEL
from localllm.config.upstreams import UpstreamSettings
from localllm.store.database import open_database
from tests.conftest import MemoryKeyring, make_settings
from tests.daemon.test_api_openai import sdk
from tests.fallback.conftest import SENTINEL_KEY
from tests.fallback.fake_upstream import FakeUpstream, Fault


def settings_with(server: FakeUpstream, **upstream):
    values = {"name": "cloudy", "kind": "openai", "base_url": server.openai_base_url, "trust": "cloud",
              "model": "gpt-test", "price_input_per_mtok": 1.0, "price_output_per_mtok": 2.0,
              "connect_timeout_s": 1, "first_byte_timeout_s": 1, "timeout_s": 5, "max_retries": 1, **upstream}
    return make_settings(cache={"enabled": False}).model_copy(
        update={"upstreams": [UpstreamSettings.model_validate(values)]})


async def test_upstream_model_is_proxied_with_route_cost_and_key(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy/gpt-test", messages=[{"role": "user", "content": "Capital of France?"}], max_tokens=50)
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
    answer = raw.parse()
    assert answer.choices[0].message.content == fake_cloud.text
    assert fake_cloud.received[-1].headers["Authorization"] == f"Bearer {SENTINEL_KEY}"
    assert fake_cloud.received[-1].body["model"] == "gpt-test"
    row = next(open_database().query("SELECT * FROM requests ORDER BY id DESC LIMIT 1"))
    assert (row["route"], row["upstream"], row["status"]) == ("cloud", "cloudy", 200)
    expected = (row["prompt_tokens"] * 1.0 + row["completion_tokens"] * 2.0) / 1e6
    assert row["cost_usd"] == pytest.approx(expected) and row["cost_usd"] > 0


async def test_upstream_stream_reaches_the_sdk(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    stream = await client.chat.completions.create(model="cloudy", messages=[{"role": "user", "content": "Hi"}],
                                                  stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == fake_cloud.text
    assert chunks[-1].usage.prompt_tokens == fake_cloud.prompt_tokens


@pytest.mark.parametrize("fault, reason", [
    (Fault("http_500"), "http_5xx"),
    (Fault("slow_first_byte", delay_s=3), "timeout"),
    (Fault("reset"), "connect"),
])
async def test_failing_upstream_is_answered_locally_with_the_reason(make_client, fake_cloud, upstream_key,
                                                                    fault, reason):
    fake_cloud.fail_always(fault)
    client = sdk(await make_client(settings_with(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=4, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == reason
    answer = raw.parse()
    assert answer.model == DEFAULT_MODEL and answer.choices[0].message.content
    row = next(open_database().query("SELECT route, fallback_reason FROM requests ORDER BY id DESC LIMIT 1"))
    assert (row["route"], row["fallback_reason"]) == ("local", reason)


async def test_missing_key_falls_back_locally_and_says_so(make_client, fake_cloud):
    previous = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        client = sdk(await make_client(settings_with(fake_cloud)))
        raw = await client.chat.completions.with_raw_response.create(
            model="cloudy", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    finally:
        keyring.set_keyring(previous)
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "no_key"
    assert fake_cloud.received == []


async def test_wrong_model_for_an_upstream_is_404(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="cloudy/other-model", messages=[{"role": "user", "content": "x"}])
    assert "gpt-test" in info.value.body["message"]
    models = [m.id for m in (await client.models.list()).data]
    assert models == [DEFAULT_MODEL, "all-MiniLM-L6-v2", "cloudy/gpt-test"]


async def test_sentinel_key_never_leaks(make_client, fake_cloud, upstream_key, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    server = await make_client(settings_with(fake_cloud))
    client = sdk(server)
    fake_cloud.fail_next(Fault("http_401"), Fault("http_500"))
    bodies = []
    for _ in range(3):
        raw = await client.chat.completions.with_raw_response.create(
            model="cloudy", messages=[{"role": "user", "content": "x"}], max_tokens=2)
        bodies.append(raw.http_response.text)
        bodies.append(json.dumps(dict(raw.headers)))
    health = await server.get("/health")
    bodies.append(await health.text())
    rows = json.dumps([dict(r) for r in open_database().query("SELECT * FROM requests")])
    everything = "\n".join(bodies + [rows, caplog.text])
    assert SENTINEL_KEY not in everything


async def test_parallel_requests_never_overshoot_the_budget(make_client, upstream_key):
    import asyncio

    from localllm.config import BudgetSettings

    server = await FakeUpstream(chunk_delay_s=0.05).start()
    try:
        # Worst case per request: ~24 prompt tokens at $1/M + 10 answer tokens at $1000/M = ~$0.01.
        settings = settings_with(server, price_input_per_mtok=1.0, price_output_per_mtok=1000.0)
        settings = settings.model_copy(update={"budget": BudgetSettings(daily_usd=0.035)})
        client = sdk(await make_client(settings))

        async def one(i):
            raw = await client.chat.completions.with_raw_response.create(
                model="cloudy", messages=[{"role": "user", "content": f"q{i}"}], max_tokens=10, temperature=0)
            return raw.headers["X-LocalLLM-Route"], raw.headers.get("X-LocalLLM-Fallback-Reason")

        results = await asyncio.gather(*(one(i) for i in range(10)))
    finally:
        await server.stop()
    routes = [route for route, _ in results]
    assert "cloud" in routes
    assert ("local", "budget") in results
    spent = sum(row["cost_usd"] or 0 for row in open_database().query("SELECT cost_usd FROM requests"))
    assert 0 < spent <= 0.035


EVERY_FAULT = [
    Fault("http_500"), Fault("http_429", retry_after="1"), Fault("http_401"), Fault("reset"),
    Fault("reset", after_chunks=2), Fault("slow_first_byte", delay_s=3), Fault("stall", after_chunks=2, delay_s=3),
    Fault("truncated", after_chunks=2), Fault("malformed_json", after_chunks=2),
]


@pytest.mark.parametrize("fault", EVERY_FAULT, ids=lambda f: f"{f.kind}@{f.after_chunks}")
async def test_every_fault_still_gets_a_whole_answer_without_a_hang(make_client, fake_cloud, upstream_key, fault):
    import time

    fake_cloud.fail_always(fault)
    client = sdk(await make_client(settings_with(fake_cloud)))
    started = time.monotonic()
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, temperature=0)
    assert time.monotonic() - started < 15  # first_byte_timeout_s 1 s, one retry, then the local model
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert raw.headers["X-LocalLLM-Route"] == "local" and raw.headers["X-LocalLLM-Fallback-Reason"]


async def test_a_stream_that_breaks_after_its_first_byte_ends_with_an_error_event(make_client, fake_cloud,
                                                                                  upstream_key):
    fake_cloud.fail_always(Fault("reset", after_chunks=2))
    server = await make_client(settings_with(fake_cloud))
    response = await server.post("/v1/chat/completions", json={
        "model": "cloudy", "messages": [{"role": "user", "content": "hi"}], "stream": True})
    assert response.status == 200 and response.headers["X-LocalLLM-Route"] == "cloud"
    body = await response.text()
    assert '"error"' in body and body.rstrip().endswith("data: [DONE]")


async def test_when_the_local_model_cannot_serve_the_configured_onprem_upstream_answers(
        make_client, fake_cloud, upstream_key, tmp_path):
    from localllm.daemon.engine.model_registry import registry_for

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    settings = settings_with(fake_cloud, trust="onprem")
    settings = settings.model_copy(update={"routing": settings.routing.model_copy(
        update={"local_failure_upstream": "cloudy"})})
    registry = registry_for(settings, ["broken"], [broken])
    registry.start_all()
    with pytest.raises(Exception, match="Could not load"):
        await registry.default.wait_ready()
    client = sdk(await make_client(settings, registry=registry))
    raw = await client.chat.completions.with_raw_response.create(
        model="broken", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert raw.headers["X-LocalLLM-Route"] == "onprem"
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "local_model_failed"
    assert raw.parse().choices[0].message.content == fake_cloud.text
    await registry.stop_all()


def test_upstreams_named_by_routing_and_router_must_exist(fake_cloud):
    from pydantic import ValidationError

    from localllm.config import Settings

    base = settings_with(fake_cloud).model_dump()
    for section, key in (("routing", "local_failure_upstream"), ("router", "escalate_to")):
        data = {**base, section: {key: "nowhere"}}
        with pytest.raises(ValidationError, match=f"{section}.{key} names 'nowhere'"):
            Settings.model_validate(data)
        # A cloud upstream may be named: what reaches it is decided by the egress policy.
        assert getattr(Settings.model_validate({**base, section: {key: "cloudy"}}), section).model_dump()[key] \
            == "cloudy"


async def test_upstream_answers_are_cached_in_their_own_scope(make_client, fake_cloud, upstream_key):
    settings = settings_with(fake_cloud).model_copy(update={"cache": make_settings().cache})
    client = sdk(await make_client(settings))
    ask = dict(messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=50, temperature=0)
    first = await client.chat.completions.with_raw_response.create(model="cloudy", **ask)
    assert (first.headers["X-LocalLLM-Route"], first.headers["X-LocalLLM-Cache"]) == ("cloud", "miss")
    again = await client.chat.completions.with_raw_response.create(model="cloudy", **ask)
    assert (again.headers["X-LocalLLM-Route"], again.headers["X-LocalLLM-Cache"]) == ("cache", "hit")
    assert again.parse().choices[0].message.content == fake_cloud.text
    assert len(fake_cloud.received) == 1  # the second answer cost nothing
    local = await client.chat.completions.with_raw_response.create(model=DEFAULT_MODEL, **ask)
    assert local.headers["X-LocalLLM-Cache"] == "miss"  # the local model's scope is separate


async def test_spend_already_in_the_log_counts_against_the_budget_after_a_restart(make_client, fake_cloud,
                                                                                  upstream_key):
    from localllm.config import BudgetSettings
    from localllm.store.database import database_path
    from localllm.store.request_log import RequestLog, RequestRecord
    from localllm.store.writer import StoreWriter

    writer = StoreWriter(database_path())
    writer.start()
    await RequestLog(writer).record(RequestRecord(endpoint="chat", status=200, route="cloud", upstream="cloudy",
                                                  cost_usd=0.9))
    writer.stop()
    settings = settings_with(fake_cloud).model_copy(update={"budget": BudgetSettings(daily_usd=1.0)})
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "x" * 400}], max_tokens=800)
    # Worst case: ~200 prompt tokens at $1/M + 1000 answer tokens at $2/M = ~$0.002; 0.9 spent + that < 1.0
    assert raw.headers["X-LocalLLM-Route"] == "cloud", raw.headers.get("X-LocalLLM-Fallback-Reason")
    expensive = settings.model_copy(update={"budget": BudgetSettings(daily_usd=0.9005)})
    raw = await sdk(await make_client(expensive)).chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "x" * 400}], max_tokens=800)
    assert raw.headers.get("X-LocalLLM-Fallback-Reason") == "budget"


async def test_a_local_fallback_fits_a_max_tokens_meant_for_the_bigger_upstream(make_client, fake_cloud, upstream_key):
    fake_cloud.fail_always(Fault("http_500"))
    client = sdk(await make_client(settings_with(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "Hi"}], max_tokens=4000, temperature=0)
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "http_5xx"
    assert raw.parse().choices[0].message.content
