"""Fixtures for the daemon tests: a fake cloud upstream and its key, and a loopback file server for pulls."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import keyring
import pytest
from aiohttp import web

from tests.conftest import MemoryKeyring
from tests.daemon.file_server import LoopbackFileServer
from tests.daemon.synthetic_gguf import tiny_gguf_bytes
from tests.fallback.conftest import SENTINEL_KEY
from tests.fallback.fake_upstream import FakeUpstream


@pytest.fixture
async def fake_cloud():
    server = await FakeUpstream().start()
    yield server
    await server.stop()


@pytest.fixture
def upstream_key():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    backend.set_password("localllm-upstream", "cloudy", SENTINEL_KEY)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch):
    # The puller honours proxy settings; the loopback server must be reached directly.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def file_server():
    # Its own thread and loop: pull() is blocking and runs its own event loop.
    server = LoopbackFileServer()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server.port = runner.addresses[0][1]
        runner_box.append(runner)
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "loopback file server did not start"
    yield server
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


@pytest.fixture
def tiny(tmp_path) -> bytes:
    return tiny_gguf_bytes(tmp_path)


@pytest.fixture
def models(tmp_path) -> Path:
    return tmp_path / "models"
