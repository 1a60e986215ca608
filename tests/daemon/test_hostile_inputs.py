"""What a hostile local client or a web page tried against the daemon, each now refused cleanly:
the right status, an OpenAI-shaped error naming the field, and no traceback in the log.
Real daemon app on 127.0.0.1, real model, raw sockets where a client library would not send it."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from localllm.config import DEFAULT_MODEL
from localllm.daemon.engine.model_registry import registry_for
from tests.conftest import make_settings
from tests.daemon.test_http_edge import CHAT, assert_openai_error

JSON_ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/route"]


def no_tracebacks(caplog) -> None:
    failures = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert failures == [], [r.getMessage() for r in failures]


async def raw_request(client, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, CRLF-separated) and ``body`` as they are; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(head.encode("latin-1") + b"\r\n\r\n" + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=30)
    writer.close()
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


async def test_a_web_page_cannot_drive_the_daemon(make_client, caplog):
    client = await make_client()
    body = json.dumps({**CHAT, "max_tokens": 2})
    # A "simple" cross-site request: no preflight, text/plain, the page's Origin.
    simple = await client.post("/v1/chat/completions", data=body,
                               headers={"Origin": "http://evil.com", "Content-Type": "text/plain"})
    assert simple.status == 403
    assert_openai_error(await simple.json(), "origin_not_allowed")
    as_json = await client.post("/v1/chat/completions", data=body,
                                headers={"Origin": "http://evil.com", "Content-Type": "application/json"})
    assert as_json.status == 403
    preflight = await client.options("/v1/chat/completions", headers={"Origin": "http://evil.com"})
    assert preflight.status == 403
    for origin in ("null", "http://localhost.evil.com", f"http://127.0.0.1:{client.server.port}.evil.com"):
        refused = await client.get("/v1/models", headers={"Origin": origin})
        assert refused.status == 403, origin
    # Not a browser, but not JSON either: refused before parsing.
    form = await client.post("/v1/chat/completions", data=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status == 415
    assert_openai_error(await form.json(), "unsupported_media_type")
    # The daemon's own origin (a page it serves) may.
    own = f"http://localhost:{client.server.port}"
    allowed = await client.get("/v1/models", headers={"Origin": own, "Host": f"localhost:{client.server.port}"})
    assert allowed.status == 200
    no_tracebacks(caplog)


async def test_listed_cors_origins_may_call_from_a_browser(make_client):
    client = await make_client(make_settings(cors_origins=["http://app.example"]))
    preflight = await client.options("/v1/chat/completions", headers={
        "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "http://app.example"
    answered = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2},
                                 headers={"Origin": "http://app.example"})
    assert answered.status == 200 and answered.headers["Access-Control-Allow-Origin"] == "http://app.example"


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_deeply_nested_json_is_a_400_on_every_endpoint(make_client, caplog, path):
    client = await make_client()
    deep = "[" * 10_000 + "]" * 10_000
    response = await client.post(path, data=deep, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert_openai_error(await response.json())
    no_tracebacks(caplog)


async def test_unicode_that_is_not_text_is_a_400(make_client, caplog):
    client = await make_client()
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "hi LONE there"}]})
    body = body.replace("LONE", "\\ud800")  # json.dumps cannot write a lone surrogate escape itself
    response = await client.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "surrogate" in (await response.json())["error"]["message"]
    no_tracebacks(caplog)


@pytest.mark.parametrize(("change", "param"), [
    ({"logit_bias": {"²": 1}}, "logit_bias"),
    ({"logit_bias": {"-1": 1}}, "logit_bias"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": "0.5"}, "temperature"),
    ({"stream": "yes"}, "stream"),
    ({"seed": 2**64}, "seed"),
    ({"n": 5}, "n"),
])
async def test_lax_values_are_refused_naming_the_field(make_client, caplog, change, param):
    client = await make_client()
    for path in ("/v1/chat/completions", "/v1/route"):
        response = await client.post(path, json={**CHAT, **change})
        assert response.status == 400, path
        body = await response.json()
        assert_openai_error(body)
        assert body["error"]["param"] == param, (path, body)
    no_tracebacks(caplog)


@pytest.mark.parametrize(("change", "param"), [({"max_tokens": 10**12}, "max_tokens"),
                                                ({"logit_bias": {"999999": 1}}, "logit_bias")])
async def test_route_refuses_what_chat_refuses(make_client, change, param):
    client = await make_client()
    for path in ("/v1/chat/completions", "/v1/route"):
        response = await client.post(path, json={**CHAT, **change})
        assert response.status == 400, (path, await response.text())
        assert (await response.json())["error"]["param"] == param


async def test_an_empty_completion_prompt_is_answered_from_the_start_of_text(make_client, shared_registry):
    client = await make_client()
    response = await asyncio.wait_for(client.post("/v1/completions", json={
        "model": DEFAULT_MODEL, "prompt": "", "max_tokens": 4, "temperature": 0}), timeout=60)
    assert response.status == 200
    body = await response.json()
    assert body["usage"]["prompt_tokens"] == 1 and body["choices"][0]["finish_reason"] in ("stop", "length")
    assert shared_registry.default.running == 0  # no slot is held after the answer


@pytest.mark.parametrize("host", ["localhost:1@evil.com", "localhost:1/x", "local host", "[::1", "a" * 300,
                                  "localhost:99999999", "\u00e9vil.com", "localhost:1:2", "[zz]", "[::1]x",
                                  "[::1]:8765:1", "localhost:+1", "%6cocalhost", "[]", "[::1]:"])
async def test_malformed_host_headers_are_refused_without_tracebacks(make_client, caplog, host):
    client = await make_client()
    status, body = await raw_request(client, f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close")
    assert status in (400, 403)
    if status == 403:
        assert json.loads(body)["error"]["code"] == "host_not_allowed"
    no_tracebacks(caplog)


async def test_a_request_without_a_host_header_is_refused(make_client, caplog):
    client = await make_client()
    status, _ = await raw_request(client, "GET /v1/models HTTP/1.0")
    assert status == 403
    no_tracebacks(caplog)


async def test_health_details_need_the_token_when_one_is_set(make_client):
    client = await make_client(api_token="the-token")
    bare = await client.get("/health")
    assert bare.status == 200 and set(await bare.json()) == {"service", "status", "ready"}
    assert (await client.get("/health/live")).status == 200
    detailed = await (await client.get("/health", headers={"Authorization": "Bearer the-token"})).json()
    assert {"pid", "memory_rss_mb", "models"} <= set(detailed)
    assert (await client.get("/v1/models")).status == 401


async def test_a_burst_gets_exactly_the_configured_capacity(make_client, default_model_file):
    settings = make_settings(engine={"n_parallel": 4, "queue_size": 16})
    registry = registry_for(settings, [DEFAULT_MODEL], [default_model_file])
    registry.start_all()
    await registry.default.wait_ready()
    try:
        client = await make_client(settings, registry=registry)
        # Long enough answers (end-of-generation banned) that nobody finishes before the burst is in.
        body = {**CHAT, "max_tokens": 48, "temperature": 0, "logit_bias": {"2": -100, "0": -100}}
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(50)))
        statuses = sorted(r.status for r in responses)
        assert statuses.count(200) == 20 and statuses.count(503) == 30, statuses
        for response in responses:
            if response.status == 503:
                assert_openai_error(await response.json(), "queue_full")
    finally:
        await registry.stop_all()


async def test_the_embedding_model_is_listed_and_named_as_it_is_asked_for(make_client):
    client = await make_client(make_settings(cache={"enabled": True}))
    models = [m["id"] for m in (await (await client.get("/v1/models")).json())["data"]]
    assert "all-MiniLM-L6-v2" in models
    wrong = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert wrong.status == 404 and "'all-MiniLM-L6-v2'" in (await wrong.json())["error"]["message"]
    shortened = await client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x",
                                                           "dimensions": 128})
    assert shortened.status == 400 and (await shortened.json())["error"]["param"] == "dimensions"
    full = await client.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 384})
    assert full.status == 200 and len((await full.json())["data"][0]["embedding"]) == 384


async def test_each_token_has_its_own_rate_limit(make_client):
    client = await make_client(make_settings(rate_limit_per_minute=3), api_token="main",
                               namespace_tokens={"team-a": "token-a"})
    main = {"Authorization": "Bearer main"}
    for _ in range(3):
        assert (await client.get("/v1/models", headers=main)).status == 200
    limited = await client.get("/v1/models", headers=main)
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    assert_openai_error(await limited.json(), "rate_limit_exceeded")
    # Another token has its own allowance; health stays answerable.
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer token-a"})).status == 200
    assert (await client.get("/health/live")).status == 200


def test_the_allowance_refills_at_the_limits_pace():
    from localllm.daemon.http.rate_limit import RateLimiter
    from localllm.errors import RateLimited

    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second
    for _ in range(60):
        limiter.take("t")
    with pytest.raises(RateLimited) as refused:
        limiter.take("t")
    assert refused.value.retry_after_s == 1
    now[0] += 1.0
    limiter.take("t")  # one more after a second
    with pytest.raises(RateLimited):
        limiter.take("t")
    RateLimiter(0).take("t")  # 0: no limit


@pytest.mark.parametrize("head", ["GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Probe: a\x00b",
                                  "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nBad Header Name: x",
                                  "GET /v1/models HTTP/9.9\r\nHost: localhost"])
async def test_malformed_http_is_a_400_and_one_quiet_log_line(make_client, caplog, head):
    caplog.set_level(logging.DEBUG)
    client = await make_client()
    status, _ = await raw_request(client, head + "\r\nConnection: close")
    assert status == 400
    no_tracebacks(caplog)
