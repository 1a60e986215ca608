"""One real, independent OpenAI-compatible server as an on-prem upstream: llama-cpp-python's
own server (its `[server]` extra) serving the default model on 127.0.0.1."""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import sys

import aiohttp
import pytest

from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.providers import UpstreamRequest
from localllm.vocabulary import TextDelta
from tests.fallback.streaming import collect

SERVER_EXTRA = ["fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"]


def missing_server_packages() -> list[str]:
    missing = [name for name in SERVER_EXTRA if importlib.util.find_spec(name) is None]
    if not missing:
        try:  # their own dependencies too (pydantic-settings needs python-dotenv, ...)
            import llama_cpp.server.app  # noqa: F401
        except ModuleNotFoundError as exc:
            missing = [exc.name or str(exc)]
    return missing


MISSING = missing_server_packages()
START_TIMEOUT_S = 60

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason="llama-cpp-python's server needs its [server] extra; missing: "
                       + ", ".join(MISSING) + " (pip install 'llama-cpp-python[server]')"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until_serving(process: subprocess.Popen, base_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(START_TIMEOUT_S * 10):
            if process.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited with {process.returncode}: "
                                     f"{process.stderr.read().decode(errors='replace')[-2000:]}")
            try:
                async with session.get(f"{base_url}/models") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"llama_cpp.server did not answer within {START_TIMEOUT_S} s")


@pytest.fixture
async def llama_cpp_server(default_model_file):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_file), "--model_alias", "smollm2",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--n_threads", "2", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        await wait_until_serving(process, base_url)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_llama_cpp_server_as_onprem_upstream(llama_cpp_server, make_registry):
    settings = UpstreamSettings(name="gpu-box", kind="openai-compatible", base_url=llama_cpp_server,
                                trust="onprem", model="smollm2", first_byte_timeout_s=30)
    upstream = make_registry(settings).get("gpu-box")
    request = UpstreamRequest(messages=[{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Name three colours."}],
                              max_tokens=8, temperature=0.0, seed=1)
    events: list = []
    text, finished = await collect(upstream, request, api_key=None, into=events)
    assert text.strip()
    assert sum(isinstance(e, TextDelta) for e in events) >= 2  # streamed, not one lump
    assert finished.finish_reason in ("length", "stop")
    # This server may ignore stream_options.include_usage; when it reports usage, it must add up.
    if finished.completion_tokens:
        assert finished.completion_tokens <= 8 and finished.prompt_tokens > 5
    again, _ = await collect(upstream, request, api_key=None)
    assert again == text  # temperature 0 and a seed: the same answer, so the request really went through
