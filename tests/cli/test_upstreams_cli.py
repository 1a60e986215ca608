"""`localllm keys` and `localllm upstreams list|test` against a fake cloud on 127.0.0.1."""

from __future__ import annotations

import asyncio
import threading

import pytest
from click.testing import CliRunner

from localllm import paths
from localllm.cli.main import cli
from tests.fallback.conftest import SENTINEL_KEY
from tests.fallback.fake_upstream import FakeUpstream, Fault


@pytest.fixture
def fake_cloud_thread():
    """The fake upstream on its own event loop in a thread, so the CLI can asyncio.run beside it."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(FakeUpstream().start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    yield holder["server"]
    asyncio.run_coroutine_threadsafe(holder["server"].stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def configure(server: FakeUpstream) -> None:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'''
[[upstreams]]
name = "cloudy"
kind = "openai"
base_url = "{server.openai_base_url}"
trust = "cloud"
model = "gpt-test"
connect_timeout_s = 1
first_byte_timeout_s = 1
max_retries = 0
''')


def run(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_keys_and_upstream_check(fake_cloud_thread, memory_keyring, monkeypatch):
    configure(fake_cloud_thread)
    listed = run("upstreams", "list")
    assert "cloudy  openai" in listed.output and "key=missing" in listed.output
    no_key = run("upstreams", "test", "cloudy")
    assert no_key.exit_code == 1 and "localllm keys set cloudy" in no_key.output

    stored = run("keys", "set", "cloudy", input=SENTINEL_KEY + "\n")
    assert stored.exit_code == 0 and SENTINEL_KEY not in stored.output
    assert "cloudy  keyring" in run("keys", "list").output
    ok = run("upstreams", "test", "cloudy")
    assert ok.exit_code == 0, ok.output
    assert "cloudy OK: first token" in ok.output and SENTINEL_KEY not in ok.output

    fake_cloud_thread.fail_always(Fault("http_500"))
    failed = run("upstreams", "test", "cloudy")
    assert failed.exit_code == 1 and "http_5xx" in failed.output
    assert SENTINEL_KEY not in failed.output

    assert run("keys", "rm", "cloudy").exit_code == 0
    monkeypatch.setenv("LOCALLLM_KEY_CLOUDY", "from-env")
    assert "env LOCALLLM_KEY_CLOUDY  (less safe" in run("keys", "list").output
    shown = run("config", "show").output
    assert "upstreams.cloudy.key" in shown and "less safe" in shown and "from-env" not in shown


def test_unknown_upstream_and_bad_config_are_one_line_errors(fake_cloud_thread):
    configure(fake_cloud_thread)
    unknown = run("upstreams", "test", "nope")
    assert unknown.exit_code == 1 and "configured: cloudy" in unknown.output
    paths.config_file().write_text('[[upstreams]]\nname = "x"\nkind = "openai-compatible"\nmodel = "m"\n')
    bad = run("upstreams", "list")
    assert bad.exit_code == 1 and "base_url" in bad.output and "Traceback" not in bad.output
