"""The daemon as started for real: `serve()` in-process and `localllm serve` as a subprocess."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from localllm.config import DEFAULT_MODEL, Settings
from localllm.daemon.http.server import serve
from localllm.errors import ConfigError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_on(port: int, **server) -> Settings:
    return Settings.model_validate({"engine": {"n_ctx": 1024, "n_threads": 2},
                                    "server": {"port": port, **server}})


async def test_refuses_to_listen_beyond_loopback_without_token():
    with pytest.raises(ConfigError, match="without an API token"):
        await serve(settings_on(free_port(), host="0.0.0.0"), [DEFAULT_MODEL])


async def test_slow_headers_are_cut_off(models_dir):
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings_on(port, header_timeout_s=1.0), [DEFAULT_MODEL], ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 60)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # never finishes the head
    await writer.drain()
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), 10)  # returns when the server closes
    assert data == b""
    assert time.monotonic() - started < 5
    writer.close()
    stop.set()
    await task


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.slow
def test_real_serve_subprocess_answers_ask_and_status_then_stops(models_dir, localllm_home):
    port = free_port()
    env = {**os.environ, "LOCALLLM_HOME": str(localllm_home), "LOCALLLM_SERVER_PORT": str(port),
           "LOCALLLM_ENGINE_N_CTX": "1024", "LOCALLLM_ENGINE_N_THREADS": "2"}
    cli = [sys.executable, "-m", "localllm.cli"]
    daemon = subprocess.Popen(cli + ["serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert daemon.poll() is None, daemon.stderr.read().decode()
            try:
                status, body = _get_json(f"http://127.0.0.1:{port}/health")
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "daemon never became healthy"
            time.sleep(0.2)
        assert body["models"][0]["id"] == DEFAULT_MODEL
        assert body["cache"] in ("loading", "on")  # the cache warms up in the background
        while body["cache"] != "on":
            assert time.monotonic() < deadline + 60, body
            time.sleep(0.2)
            _, body = _get_json(f"http://127.0.0.1:{port}/health")

        answers = []
        for _ in range(2):
            ask = subprocess.run(cli + ["ask", "--json", "-t", "0", "--max-tokens", "4", "Say hi"], env=env,
                                 capture_output=True, text=True, timeout=60)
            assert ask.returncode == 0, ask.stderr
            answers.append(json.loads(ask.stdout))
        assert answers[0]["usage"]["completion_tokens"] <= 4
        assert answers[0]["id"].startswith("chatcmpl-")
        assert answers[1]["choices"] == answers[0]["choices"]

        logs = subprocess.run(cli + ["logs", "--json"], env=env, capture_output=True, text=True, timeout=30)
        rows = [json.loads(line) for line in logs.stdout.splitlines()]
        assert [(r["route"], r["cache"]) for r in rows[:2]] == [("cache", "hit"), ("local", "miss")]
        assert rows[1]["request_id"] == answers[0]["id"]

        status = subprocess.run(cli + ["status"], env=env, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0, status.stderr
        assert f"127.0.0.1:{port}" in status.stdout and DEFAULT_MODEL in status.stdout
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


def _start_daemon(localllm_home, **settings) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "LOCALLLM_HOME": str(localllm_home), "LOCALLLM_SERVER_PORT": str(port),
           "LOCALLLM_ENGINE_N_CTX": "2048", "LOCALLLM_ENGINE_N_THREADS": "2", "LOCALLLM_CACHE_ENABLED": "false",
           **{f"LOCALLLM_{key.upper()}": str(value) for key, value in settings.items()}}
    daemon = subprocess.Popen([sys.executable, "-m", "localllm.cli", "serve"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        assert daemon.poll() is None, daemon.stderr.read().decode()
        try:
            if _get_json(f"http://127.0.0.1:{port}/health")[0] == 200:
                return daemon, port
        except OSError:
            pass
        assert time.monotonic() < deadline, "daemon never became ready"
        time.sleep(0.2)


def _stream_lines(port: int, max_tokens: int):
    body = json.dumps({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "logit_bias": {"0": -100, "2": -100}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=120)


@pytest.mark.slow
def test_sigterm_lets_requests_in_flight_finish_then_exits(localllm_home, models_dir):
    daemon, port = _start_daemon(localllm_home, server_shutdown_grace_s=60)
    with _stream_lines(port, 80) as stream:
        assert stream.readline().startswith(b"data:")  # generating now
        daemon.send_signal(signal.SIGTERM)
        rest = stream.read().decode()
    assert rest.rstrip().endswith("data: [DONE]")
    assert '"finish_reason": "length"' in rest or '"finish_reason":"length"' in rest
    _, stderr = daemon.communicate(timeout=60)
    assert daemon.returncode == 0 and b"Traceback" not in stderr
    with pytest.raises(OSError):  # no longer listening
        _get_json(f"http://127.0.0.1:{port}/health")


@pytest.mark.slow
def test_sigterm_cuts_off_what_outlasts_the_grace_period(localllm_home, models_dir):
    daemon, port = _start_daemon(localllm_home, server_shutdown_grace_s=1)
    with _stream_lines(port, 1800) as stream:  # far longer than a second
        assert stream.readline().startswith(b"data:")
        daemon.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            rest = stream.read().decode()
        except (OSError, http.client.IncompleteRead) as exc:
            rest = str(exc)
    _, stderr = daemon.communicate(timeout=60)
    assert time.monotonic() - started < 20
    assert "data: [DONE]" not in rest
    assert daemon.returncode == 0 and b"Traceback" not in stderr
