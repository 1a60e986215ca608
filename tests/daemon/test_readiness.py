"""The daemon listens at once and is ready only when every part is: liveness at /health/live,
readiness at /health, and once /health says 200 the very first request has its cache and router.
Real app lifecycle (models loaded in worker threads, runtime built in the background) on 127.0.0.1."""

from __future__ import annotations

import asyncio

from localllm.config import DEFAULT_MODEL
from localllm.daemon.engine.model_registry import registry_for
from localllm.daemon.http.app import create_app
from localllm.daemon.http.app_keys import RUNTIME
from tests.conftest import make_settings


async def wait_for(app_client, path: str, status: int, timeout_s: float = 120.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        response = await app_client.get(path)
        body = await response.json()
        if response.status == status:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.1)


async def test_ready_means_every_part_is_ready(aiohttp_client, default_model_file, models_dir):
    settings = make_settings(cache={"enabled": True})
    registry = registry_for(settings, [DEFAULT_MODEL], [default_model_file])
    app = create_app(settings, registry)
    app_client = await aiohttp_client(app)

    # The guard alone takes seconds to load: right after start the daemon is alive, not ready.
    assert app[RUNTIME].runtime is None
    live = await app_client.get("/health/live")
    assert live.status == 200 and (await live.json())["status"] == "alive"
    early = await app_client.get("/health")
    assert early.status == 503 and (await early.json())["ready"] is False
    refused = await app_client.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status in (503,) and "Retry-After" in refused.headers
    assert (await refused.json())["error"]["code"] in ("starting", "model_loading")

    health = await wait_for(app_client, "/health", 200)
    assert (health["status"], health["cache"], health["guard"], health["router"]) == ("ok", "on", "on", "on")
    # The first request after /health said 200 already uses the cache and the router.
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Name a planet."}], "temperature": 0,
            "max_tokens": 5}
    plan = await (await app_client.post("/v1/route", json=body)).json()
    assert plan["router"]["score"] is not None and plan["cache"]["outcome"] == "miss"
    answered = await app_client.post("/v1/chat/completions", json=body)
    assert answered.status == 200 and answered.headers["X-LocalLLM-Cache"] == "miss"


async def test_a_part_that_cannot_open_is_reported_and_refused(aiohttp_client, default_model_file, models_dir,
                                                               localllm_home):
    (localllm_home / "data" / "localllm.db").mkdir(parents=True)  # a directory where the database should be
    failures = []
    settings = make_settings(cache={"enabled": False})
    registry = registry_for(settings, [DEFAULT_MODEL], [default_model_file])
    app_client = await aiohttp_client(create_app(settings, registry, on_startup_failure=failures.append))
    while not failures:
        await asyncio.sleep(0.05)
    health = await (await app_client.get("/health")).json()
    assert health["status"] == "error" and "localllm.db" in health["error"]
    refused = await app_client.post("/v1/chat/completions", json={
        "model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert refused.status == 503 and (await refused.json())["error"]["code"] == "startup_failed"
