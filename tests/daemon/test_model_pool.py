"""Many models on one box: the daemon as `localllm serve` starts it (in-process), serving the models dir
that holds SmolLM2-135M and Gemma-3-270M. Loads on demand, shared loads, keep-alive, the memory budget
and eviction, files that break or vanish, /api/ps and `localllm ps`."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from contextlib import asynccontextmanager

import aiohttp
import ollama
import pytest
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import DEFAULT_MODEL, Settings
from localllm.daemon.http.server import serve
from tests.conftest import link_into
from tests.daemon.test_server import free_port

GEMMA = "gemma3-270m"


@pytest.fixture
def two_models(models_dir, gemma_model_file):
    """The test home's models dir with both models (hard-linked)."""
    link_into(models_dir, gemma_model_file)
    return models_dir


@asynccontextmanager
async def daemon(**engine):
    """`serve()` on a free port, cache and guard off (not what these tests are about)."""
    port = free_port()
    settings = Settings.model_validate({
        "engine": {"n_ctx": 1024, "n_threads": 2, "n_parallel": 2, **engine},
        "server": {"port": port}, "cache": {"enabled": False}, "guard": {"enabled": False}})
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, [DEFAULT_MODEL], ready=ready, stop=stop))
    await asyncio.wait_for(ready.wait(), 60)
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base) as session:
        for _ in range(600):  # ready: the default model and the runtime
            async with session.get("/health") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.1)
        try:
            yield session, port
        finally:
            stop.set()
            await task


async def chat(session, model: str, *, max_tokens: int = 4, headers: dict | None = None) -> tuple[int, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": max_tokens,
            "temperature": 0}
    async with session.post("/v1/chat/completions", json=body, headers=headers or {}) as response:
        return response.status, await response.json()


async def loaded(session) -> dict[str, dict]:
    async with session.get("/api/ps") as response:
        return {m["name"].removesuffix(":latest"): m for m in (await response.json())["models"]}


async def wait_until(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_any_installed_model_loads_on_its_first_request_and_both_serve(two_models):
    async with daemon() as (session, _):
        async with session.get("/v1/models") as response:
            assert {GEMMA, DEFAULT_MODEL} <= {m["id"] for m in (await response.json())["data"]}
        assert set(await loaded(session)) == {DEFAULT_MODEL}
        # Three requests at once for a model nobody has loaded: they wait for one load, then all answer.
        answers = await asyncio.gather(*(chat(session, GEMMA) for _ in range(3)), chat(session, DEFAULT_MODEL))
        assert [status for status, _ in answers] == [200] * 4, answers
        assert {body["model"] for _, body in answers} == {GEMMA, DEFAULT_MODEL}
        models = await loaded(session)
        assert set(models) == {GEMMA, DEFAULT_MODEL}
        assert models[GEMMA]["localllm"]["loads"] == 1
        # Loaded on demand: it stays engine.keep_alive (5 minutes) after its last request.
        expires_in = time.mktime(time.strptime(models[GEMMA]["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
            time.gmtime())
        assert 200 < expires_in <= 300
        assert models[DEFAULT_MODEL]["expires_at"].startswith("2318")  # loaded at start: until memory is needed
        # The Ollama client, by name with its tag.
        client = ollama.AsyncClient(host=f"http://127.0.0.1:{_}")
        reply = await client.chat(model=f"{GEMMA}:latest", messages=[{"role": "user", "content": "Hi"}],
                                  options={"num_predict": 3})
        assert reply.done and reply.model.startswith(GEMMA)


async def test_keep_alive_from_the_request_the_header_and_the_config(two_models):
    async with daemon(keep_alive="2s") as (session, port):
        client = ollama.AsyncClient(host=f"http://127.0.0.1:{port}")
        await client.generate(model=GEMMA, prompt="Hi", options={"num_predict": 2}, keep_alive=0)
        await wait_until(lambda: _absent(session, GEMMA))  # 0: unloaded right after its request
        # Ollama's way to load without generating, then to unload.
        loaded_reply = await client.generate(model=GEMMA, prompt="", keep_alive=-1)
        assert loaded_reply.done_reason == "load"
        assert (await loaded(session))[GEMMA]["expires_at"].startswith("2318")
        assert (await client.generate(model=GEMMA, prompt="", keep_alive=0)).done_reason == "unload"
        await wait_until(lambda: _absent(session, GEMMA))
        # OpenAI clients: a header. Without one, the config's 2 s.
        status, _ = await chat(session, GEMMA, headers={"X-LocalLLM-Keep-Alive": "-1"})
        assert status == 200
        await asyncio.sleep(2.5)
        assert GEMMA in await loaded(session)
        status, _ = await chat(session, GEMMA, headers={"X-LocalLLM-Keep-Alive": "1s"})
        started = time.monotonic()
        await wait_until(lambda: _absent(session, GEMMA), timeout_s=5)
        assert time.monotonic() - started >= 0.8
        # A request's keep-alive is for the idle time after it (as in Ollama): the next one without its
        # own gets the config's 2 s again.
        assert (await chat(session, GEMMA))[0] == 200
        await asyncio.sleep(1.0)
        assert GEMMA in await loaded(session)
        await wait_until(lambda: _absent(session, GEMMA), timeout_s=5)
        status, body = await chat(session, GEMMA, headers={"X-LocalLLM-Keep-Alive": "soon"})
        assert status == 400 and "X-LocalLLM-Keep-Alive" in body["error"]["message"]


async def _absent(session, name: str) -> bool:
    return name not in await loaded(session)


async def test_the_budget_evicts_the_least_recently_used_idle_model(two_models, caplog):
    caplog.set_level(logging.INFO, logger="localllm.daemon.engine.model_registry")
    # Room for either model, not both (SmolLM2 ~170 MiB, Gemma ~360 MiB with 2 sequences of 1k).
    async with daemon(memory_budget_mb=450) as (session, _):
        assert (await chat(session, GEMMA))[0] == 200
        assert set(await loaded(session)) == {GEMMA}
        assert (await chat(session, DEFAULT_MODEL))[0] == 200
        assert set(await loaded(session)) == {DEFAULT_MODEL}
        async with session.get("/health") as response:
            health = await response.json()
        assert health["status"] == "ok" and health["memory_budget_mb"] == 450
        assert health["models_resident_mb"] <= 450
    reasons = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unloaded model")]
    assert reasons[0].startswith(f"unloaded model {DEFAULT_MODEL} (making room for {GEMMA}")
    assert reasons[1].startswith(f"unloaded model {GEMMA} (making room for {DEFAULT_MODEL}")
    loads = [r.getMessage() for r in caplog.records if " loaded in " in r.getMessage()]
    assert len(loads) == 2 and all(" s" in message for message in loads)


async def test_a_model_with_requests_in_flight_is_never_evicted(two_models):
    async with daemon(memory_budget_mb=450) as (session, _):
        finished: dict[str, float] = {}

        async def long_answer():
            body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Tell a long story."}],
                    "max_tokens": 120, "temperature": 0, "stream": True}
            async with session.post("/v1/chat/completions", json=body) as response:
                text = await response.text()
            finished[DEFAULT_MODEL] = time.monotonic()
            return text

        streaming = asyncio.create_task(long_answer())
        await asyncio.sleep(0.5)  # the story is being told
        status, _ = await chat(session, GEMMA)
        finished[GEMMA] = time.monotonic()
        story = await streaming
        assert status == 200 and story.rstrip().endswith("data: [DONE]")
        assert finished[DEFAULT_MODEL] <= finished[GEMMA]  # Gemma waited for the room


async def test_a_model_too_large_for_the_whole_budget_is_refused_with_both_figures(two_models):
    async with daemon(memory_budget_mb=300) as (session, _):
        status, body = await chat(session, GEMMA)
        assert status == 503 and body["error"]["code"] == "model_too_large"
        assert "300 MiB" in body["error"]["message"] and "memory_budget_mb" in body["error"]["message"]
        assert (await chat(session, DEFAULT_MODEL))[0] == 200  # the other model is undisturbed


async def test_unknown_broken_and_vanished_models(two_models):
    (two_models / "broken.gguf").write_bytes(next(two_models.glob("SmolLM2*.gguf")).read_bytes()[:1_000_000])
    shutil.copy2(next(two_models.glob("gemma*.gguf")), two_models / "scratch.gguf")
    async with daemon() as (session, _):
        status, body = await chat(session, "no-such-model")
        assert status == 404 and "localllm pull no-such-model" in body["error"]["message"]
        assert GEMMA in body["error"]["message"] and DEFAULT_MODEL in body["error"]["message"]

        status, body = await chat(session, "broken")
        assert status == 503 and "truncated" in body["error"]["message"]
        assert (await chat(session, DEFAULT_MODEL))[0] == 200  # the others keep serving

        assert (await chat(session, "scratch"))[0] == 200
        (two_models / "scratch.gguf").unlink()  # deleted while loaded: it keeps answering from memory
        assert (await chat(session, "scratch", headers={"X-LocalLLM-Keep-Alive": "0"}))[0] == 200
        await wait_until(lambda: _absent(session, "scratch"))
        status, body = await chat(session, "scratch")  # unloaded, and its file is gone
        assert status == 404


async def test_localllm_ps_and_status_show_the_loaded_models(two_models, monkeypatch):
    async with daemon(n_parallel="auto") as (session, port):
        assert (await chat(session, GEMMA))[0] == 200
        monkeypatch.setenv("LOCALLLM_SERVER_PORT", str(port))
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["ps"])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].split()[:4] == ["NAME", "SIZE", "VRAM", "STATE"]
        rows = {line.split()[0]: line for line in lines[1:]}
        assert "forever" in rows[f"{DEFAULT_MODEL}:latest"] and "(auto)" in rows[f"{GEMMA}:latest"]
        as_json = json.loads((await asyncio.to_thread(CliRunner().invoke, cli, ["ps", "--json"])).output)
        assert {m["model"] for m in as_json} == {f"{DEFAULT_MODEL}:latest", f"{GEMMA}:latest"}
        status = await asyncio.to_thread(CliRunner().invoke, cli, ["status"])
        assert status.exit_code == 0 and "slots (auto)" in status.output and "MiB budget" in status.output
    monkeypatch.setenv("LOCALLLM_SERVER_PORT", "9")
    gone = await asyncio.to_thread(CliRunner().invoke, cli, ["ps"])
    assert gone.exit_code != 0 and "localllm serve" in gone.output and "Traceback" not in gone.output


async def test_a_chat_models_name_gives_its_own_embeddings(two_models):
    async with daemon() as (session, port):
        client = ollama.AsyncClient(host=f"http://127.0.0.1:{port}")
        reply = await client.embed(model=f"{GEMMA}:latest", input=["The cat sat.", "The cat sat.", "Stock prices"])
        vectors = reply.embeddings
        assert reply.model.startswith(GEMMA) and len(vectors) == 3 and len(vectors[0]) == 640  # Gemma's width
        assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3  # unit length, as Ollama returns them
        assert vectors[0] == vectors[1] and vectors[0] != vectors[2]
        assert GEMMA in await loaded(session)  # loaded for it, like any request
        body = {"model": DEFAULT_MODEL, "input": "The cat sat."}
        async with session.post("/v1/embeddings", json=body) as response:
            openai_shape = await response.json()
        assert response.status == 200 and openai_shape["model"] == DEFAULT_MODEL
        assert len(openai_shape["data"][0]["embedding"]) == 576 and openai_shape["usage"]["prompt_tokens"] > 0
        async with session.post("/v1/embeddings", json={**body, "dimensions": 100}) as response:
            assert response.status == 400 and "576" in (await response.json())["error"]["message"]
        async with session.post("/v1/embeddings", json={**body, "model": "nothing-here"}) as response:
            assert response.status == 404


async def test_a_request_arriving_during_an_unload_waits_and_gets_the_model_back(default_model_file):
    from localllm.daemon.engine.llama_engine import GenerationJob
    from localllm.daemon.engine.model_registry import ModelBusy, registry_for
    from localllm.vocabulary import AnswerText, Sampling
    from tests.conftest import make_settings

    registry = registry_for(make_settings(engine={"n_parallel": 2}), [DEFAULT_MODEL], [default_model_file])
    registry.start_all()
    scheduler = registry.default
    await scheduler.wait_ready()
    try:
        held = await registry.acquire(scheduler)
        with pytest.raises(ModelBusy):  # never under a request that holds it
            await registry.unload(scheduler, "test")
        held.release()

        unloading = asyncio.create_task(registry.unload(scheduler, "test"))
        await asyncio.sleep(0)
        assert scheduler.state == "unloading"
        second_stop = asyncio.create_task(scheduler.stop())  # a second stop waits for the same one
        lease = await registry.acquire(scheduler)  # waits for the unload, then loads it again
        assert (scheduler.state, scheduler.loads) == ("ready", 2)
        assert await unloading is True and await second_stop is None
        tokens = await scheduler.render_and_tokenize([{"role": "user", "content": "Say hi."}])
        answer = await AnswerText.read(scheduler.stream(GenerationJob(tokens, 4, Sampling(temperature=0))))
        assert answer.finished is not None and answer.finished.completion_tokens > 0
        lease.release()
    finally:
        await registry.stop_all()
