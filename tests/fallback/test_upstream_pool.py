"""Upstream pools (base_urls): three loopback servers behind one name. Requests spread by fewest in flight,
a dead endpoint is skipped (failover before the first token), its circuit opens, and after the cooldown
the restarted server is probed back. Through the daemon too, killing one server under load."""

from __future__ import annotations

import asyncio

import pytest

from localllm.config import UpstreamSettings
from localllm.fallback.errors import UpstreamError
from localllm.fallback.providers import UpstreamRequest
from localllm.vocabulary import AnswerText
from tests.fallback.conftest import FAST_RETRY
from tests.fallback.fake_upstream import FakeUpstream

QUESTION = UpstreamRequest(messages=[{"role": "user", "content": "Capital of France?"}])


@pytest.fixture
async def three_servers():
    servers = [await FakeUpstream(text=f"Paris, said server {i}.", chunk_delay_s=0.05).start() for i in range(3)]
    yield servers
    for server in servers:
        await server.stop()


def pool_settings(servers, **overrides) -> UpstreamSettings:
    return UpstreamSettings.model_validate({
        "name": "pool", "kind": "openai-compatible", "trust": "onprem", "model": "m",
        "base_urls": [s.openai_base_url for s in servers], "connect_timeout_s": 1, "first_byte_timeout_s": 2,
        "timeout_s": 10, "max_retries": 0, **overrides})


async def ask(upstream) -> str:
    return (await AnswerText.read(upstream.stream_chat(QUESTION, None))).text


async def test_requests_spread_over_the_endpoints_by_fewest_in_flight(three_servers, make_registry):
    upstream = make_registry(pool_settings(three_servers)).get("pool")
    answers = await asyncio.gather(*(ask(upstream) for _ in range(6)))
    assert sorted(len(s.received) for s in three_servers) == [2, 2, 2]  # 6 at once: two each
    assert {a[-9:-1] for a in answers} == {"server 0", "server 1", "server 2"}
    assert all(e.in_flight == 0 for e in upstream.endpoints)


async def test_a_dead_endpoint_is_skipped_opens_its_circuit_and_is_probed_back(three_servers, make_registry):
    registry = make_registry(pool_settings(three_servers), breaker_failures=2, breaker_cooldown_s=3.0)
    upstream = registry.get("pool")
    dead = three_servers[1]
    port = dead.port
    await dead.stop()
    for _ in range(6):  # every request is answered by the two that are alive
        assert (await ask(upstream)).startswith("Paris")
    states = {url: state.state for url, state, _ in registry.endpoint_states("pool")}
    assert states[f"http://127.0.0.1:{port}/v1"] == "open"
    assert registry.states()[0].state == "half_open"  # the pool works, with less room
    # The server comes back on the same port; after the cooldown one probe finds it and closes its circuit.
    revived = FakeUpstream(text="Paris, said server 1 again.")
    await revived.start_on(port)
    try:
        await asyncio.sleep(3.1)
        answers = [await ask(upstream) for _ in range(6)]
        assert any(a.endswith("again.") for a in answers)
        assert {state.state for _, state, _ in registry.endpoint_states("pool")} == {"closed"}
    finally:
        await revived.stop()


async def test_when_every_endpoint_fails_the_error_is_the_last_one(three_servers, make_registry):
    upstream = make_registry(pool_settings(three_servers), retry=FAST_RETRY).get("pool")
    for server in three_servers:
        await server.stop()
    with pytest.raises(UpstreamError) as caught:
        await ask(upstream)
    assert caught.value.reason == "connect"


def test_base_url_and_base_urls_are_one_or_the_other(three_servers):
    with pytest.raises(ValueError, match="not both"):
        pool_settings(three_servers, base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="twice"):
        UpstreamSettings.model_validate({"name": "p", "kind": "openai-compatible", "trust": "onprem", "model": "m",
                                         "base_urls": ["http://a/v1", "http://a/v1/"]})


async def test_the_daemon_keeps_answering_from_the_pool_when_a_server_dies_under_load(three_servers, make_client):
    from tests.conftest import make_settings

    settings = make_settings().model_copy(update={"upstreams": [pool_settings(three_servers)]})
    client = await make_client(settings)

    async def chat(n: int) -> tuple[int, str]:
        body = {"model": "pool", "messages": [{"role": "user", "content": f"Question {n}?"}], "stream": True}
        response = await client.post("/v1/chat/completions", json=body)
        await response.read()
        return response.status, response.headers.get("X-LocalLLM-Route")

    first = asyncio.gather(*(chat(n) for n in range(9)))
    await asyncio.sleep(0.05)
    await three_servers[2].stop()  # dies while requests are in flight and more keep coming
    later = await asyncio.gather(*(chat(n) for n in range(9, 18)))
    answered = [*await first, *later]
    # Requests that had begun streaming from the dead server end in-band; every other one is served by the
    # pool (onprem), none falls back to the local model.
    assert sum(route == "onprem" for _, route in answered) >= 15 and all(status == 200 for status, _ in answered)
    assert all(route == "onprem" for _, route in later)
    health = await (await client.get("/health")).json()
    [pool] = health["upstreams"]
    assert len(pool["endpoints"]) == 3 and pool["endpoints"][2]["failures"] >= 1
