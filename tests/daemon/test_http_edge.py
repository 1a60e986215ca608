"""The door of the daemon: Host checks, limits, error shapes, queueing, disconnects."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.daemon.engine.llama_engine import ModelLoadError
from localllm.daemon.engine.model_registry import registry_for
from tests.conftest import make_settings

CHAT = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Count to ten."}]}


def assert_openai_error(body: dict, code: str | None = None) -> None:
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    if code:
        assert body["error"]["code"] == code


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "", ":8765", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "[::1", "::1", "127.0.0.1.", "localhost:8765@evil.example",
                                  "127.0.0.1.nip.io", "[::ffff:8.8.8.8]", "0.0.0.0:8765"])
async def test_foreign_or_malformed_host_header_is_rejected(make_client, host):
    client = await make_client()
    response = await client.get("/v1/models", headers={"Host": host})
    assert response.status == 403
    assert_openai_error(await response.json(), "host_not_allowed")


@pytest.mark.parametrize("host", ["localhost", "localhost:8765", "127.0.0.1:1", "127.1.2.3", "[::1]:8765",
                                  "localhost.", "localhost.:8765", "LOCALHOST", "[0:0:0:0:0:0:0:1]:8765", "[::1]"])
async def test_loopback_host_headers_are_accepted(make_client, host):
    client = await make_client()
    response = await client.get("/v1/models", headers={"Host": host})
    assert response.status == 200


async def test_allowed_hosts_extend_the_loopback_names(make_client):
    client = await make_client(make_settings(allowed_hosts=["my-box.lan"]))
    assert (await client.get("/v1/models", headers={"Host": "my-box.lan:8765"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "other.lan"})).status == 403


async def test_body_too_large_is_413(make_client):
    client = await make_client(make_settings(max_body_bytes=2048))
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 413
    assert_openai_error(await response.json(), "request_too_large")


async def test_chunked_body_too_large_is_413(make_client):
    client = await make_client(make_settings(max_body_bytes=2048))

    async def chunks():
        yield json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()

    response = await client.post("/v1/chat/completions", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert_openai_error(await response.json())


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
async def test_bad_json_is_400(make_client, raw):
    client = await make_client()
    response = await client.post("/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert_openai_error(await response.json())


async def test_unknown_route_and_wrong_method_are_openai_shaped(make_client):
    client = await make_client()
    missing = await client.get("/v1/nothing")
    assert missing.status == 404
    assert_openai_error(await missing.json())
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status == 405
    assert_openai_error(await wrong.json())


async def test_cors_off_by_default_and_on_for_configured_origins(make_client):
    plain = await make_client()
    response = await plain.get("/v1/models", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    cors = await make_client(make_settings(cors_origins=["https://app.example"]))
    preflight = await cors.options("/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await cors.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_health_reports_ready_model_and_memory(make_client):
    client = await make_client()
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["models"][0]["id"] == DEFAULT_MODEL and body["models"][0]["state"] == "ready"
    assert body["memory_rss_mb"] > 0


async def test_model_that_fails_to_load_gives_503(make_client, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    registry = registry_for(make_settings(), ["broken"], [broken])
    registry.start_all()
    with pytest.raises(ModelLoadError, match="Could not load model 'broken'"):
        await registry.default.wait_ready()
    client = await make_client(registry=registry)
    health = await client.get("/health")
    assert health.status == 503
    response = await client.post("/v1/chat/completions", json={**CHAT, "model": "broken"})
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert_openai_error(await response.json())
    await registry.stop_all()


async def _wait_until(predicate, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_full_queue_is_503_with_retry_after(make_client, default_model_file):
    # One sequence and queue_size 1: one request generating, one waiting, the third is refused.
    settings = make_settings(engine={"n_parallel": 1, "queue_size": 1})
    registry = registry_for(settings, [DEFAULT_MODEL], [default_model_file])
    registry.start_all()
    await registry.default.wait_ready()
    client = await make_client(registry=registry)
    long = {**CHAT, "max_tokens": 400, "stream": True}
    running = await client.post("/v1/chat/completions", json=long)
    await running.content.readline()
    waiting = asyncio.ensure_future(client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2}))
    await _wait_until(lambda: registry.default.waiting == 1)
    refused = await client.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert_openai_error(await refused.json(), "queue_full")
    running.close()
    assert (await waiting).status == 200
    await registry.stop_all()


async def test_client_disconnect_stops_generation(make_client, shared_registry):
    client = await make_client()
    scheduler = shared_registry.default
    response = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 900, "stream": True,
                                                               "temperature": 1.0, "seed": 3})
    for _ in range(4):
        await response.content.readline()
    assert scheduler.busy
    response.close()
    started = time.monotonic()
    await _wait_until(lambda: not scheduler.busy, timeout_s=5)
    # 900 tokens take far longer than this; a few tokens' time means it stopped.
    assert time.monotonic() - started < 2
