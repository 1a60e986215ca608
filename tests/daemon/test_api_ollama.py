"""The Ollama API, driven by the official `ollama` Python client against the real daemon app and model:
chat and generate (streamed and not, with options, format and tools), embeddings, the model endpoints,
and Ollama-shaped errors."""

from __future__ import annotations

import json

import jsonschema
import ollama
import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.daemon.test_structured_output import CITY
from tests.daemon.test_tool_calls import SCHEMAS, TIME, WEATHER

GREEDY = {"temperature": 0, "num_predict": 12}


async def client_for(make_client, settings=None) -> ollama.AsyncClient:
    server = await make_client(settings or make_settings(cache={"enabled": True}))
    return ollama.AsyncClient(host=str(server.make_url("")).rstrip("/"))


async def test_chat_whole_and_streamed_give_the_same_answer_with_ollamas_counts(make_client):
    client = await client_for(make_client)
    messages = [{"role": "user", "content": "Name a colour."}]
    whole = await client.chat(model=DEFAULT_MODEL, messages=messages, options=GREEDY, stream=False)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.message.role == "assistant"
    assert whole.message.content and whole.eval_count > 0 and whole.prompt_eval_count > 0
    assert whole.total_duration >= whole.eval_duration > 0
    parts = [part async for part in await client.chat(model=f"{DEFAULT_MODEL}:latest", messages=messages,
                                                      options=GREEDY, stream=True)]
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == whole.message.content


async def test_generate_with_system_raw_and_the_load_probe(make_client):
    client = await client_for(make_client)
    answer = await client.generate(model=DEFAULT_MODEL, prompt="Say hi.", system="Answer in one word.",
                                   options=GREEDY)
    assert answer.done and answer.response
    raw = await client.generate(model=DEFAULT_MODEL, prompt="The capital of France is", raw=True,
                                options={"temperature": 0, "num_predict": 5})
    assert raw.eval_count <= 5 and raw.response
    streamed = [p async for p in await client.generate(model=DEFAULT_MODEL, prompt="Say hi.",
                                                       system="Answer in one word.", options=GREEDY, stream=True)]
    assert "".join(p.response for p in streamed) == answer.response
    loaded = await client.generate(model=DEFAULT_MODEL, prompt="")
    assert loaded.done_reason == "load"


async def test_format_json_and_a_schema(make_client):
    client = await client_for(make_client)
    messages = [{"role": "user", "content": "Describe the capital of France as JSON."}]
    shaped = await client.chat(model=DEFAULT_MODEL, messages=messages, format=CITY,
                               options={"temperature": 1.0, "seed": 4, "num_predict": 160})
    jsonschema.validate(json.loads(shaped.message.content), CITY)
    anything = await client.chat(model=DEFAULT_MODEL, messages=messages, format="json",
                                 options={"temperature": 0, "num_predict": 120})
    assert isinstance(json.loads(anything.message.content), dict)


async def test_tools_come_back_as_ollama_tool_calls(make_client):
    client = await client_for(make_client, make_settings(cache={"enabled": False}))
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = await client.chat(model=DEFAULT_MODEL, messages=messages, tools=[WEATHER, TIME],
                              options={"temperature": 0, "num_predict": 300})
    message = reply.message
    if message.tool_calls:
        for call in message.tool_calls:
            jsonschema.validate(dict(call.function.arguments), SCHEMAS[call.function.name])
        # The result goes back as Ollama sends it (tool_name, no call id) and is rendered.
        history = [*messages, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": c.function.name, "arguments": dict(c.function.arguments)}}
            for c in message.tool_calls]},
            {"role": "tool", "tool_name": message.tool_calls[0].function.name, "content": "18 degrees"}]
        follow = await client.chat(model=DEFAULT_MODEL, messages=history, tools=[WEATHER, TIME],
                                   options={"temperature": 0, "num_predict": 40})
        assert follow.done
    else:
        assert message.content
    streamed = [p async for p in await client.chat(model=DEFAULT_MODEL, messages=messages, tools=[WEATHER],
                                                   options={"temperature": 0, "num_predict": 300}, stream=True)]
    calls = [c for p in streamed for c in (p.message.tool_calls or [])]
    text = "".join(p.message.content or "" for p in streamed)
    assert calls or text
    for call in calls:
        jsonschema.validate(dict(call.function.arguments), SCHEMAS[call.function.name])


async def test_embeddings_new_and_old(make_client):
    client = await client_for(make_client)
    both = await client.embed(model="all-MiniLM-L6-v2", input=["a cat", "a dog"])
    assert len(both.embeddings) == 2 and len(both.embeddings[0]) == 384 and both.prompt_eval_count > 0
    one = await client.embeddings(model="all-MiniLM-L6-v2:latest", prompt="a cat")
    assert one.embedding == pytest.approx(both.embeddings[0], abs=1e-5)


async def test_model_endpoints(make_client, models_dir):
    client = await client_for(make_client)
    listed = await client.list()
    names = [m.model for m in listed.models]
    assert f"{DEFAULT_MODEL}:latest" in names
    entry = next(m for m in listed.models if m.model == f"{DEFAULT_MODEL}:latest")
    assert entry.details.format == "gguf" and entry.details.quantization_level == "Q4_1" and entry.size > 0
    assert len(entry.digest) == 64
    shown = await client.show(DEFAULT_MODEL)
    assert "im_start" in shown.template and "tools" in shown.capabilities
    assert shown.modelinfo["general.architecture"] == "llama"
    running = await client.ps()
    assert [m.model for m in running.models] == [f"{DEFAULT_MODEL}:latest"]
    assert running.models[0].context_length > 0
    await client.copy(DEFAULT_MODEL, "my-copy")
    assert "my-copy:latest" in [m.model for m in (await client.list()).models]
    await client.delete("my-copy")
    assert "my-copy:latest" not in [m.model for m in (await client.list()).models]
    pulled = [p async for p in await client.pull(DEFAULT_MODEL, stream=True)]  # present already: verified
    assert pulled[-1].status == "success"
    assert (await client.pull(DEFAULT_MODEL)).status == "success"


async def test_version_root_and_ollama_shaped_errors(make_client):
    server = await make_client()
    assert (await server.get("/")).status == 200 and await (await server.get("/")).text() == "Ollama is running"
    assert (await server.head("/")).status == 200
    assert "version" in await (await server.get("/api/version")).json()
    client = ollama.AsyncClient(host=str(server.make_url("")).rstrip("/"))
    with pytest.raises(ollama.ResponseError) as missing:
        await client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    for body, param in (({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
                         "Images"),
                        ({"model": DEFAULT_MODEL, "prompt": "x", "template": "{{ .Prompt }}"}, "Template"),
                        ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}],
                          "options": {"num_ctx": 10**9}}, "num_ctx"),
                        ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}],
                          "options": {"warp_speed": 9}}, "warp_speed"),
                        ({"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}],
                          "keep_alive": "five minutes"}, "keep_alive")):
        path = "/api/generate" if "prompt" in body else "/api/chat"
        response = await server.post(path, json={**body, "stream": False})
        assert response.status == 400, body
        error = await response.json()
        assert set(error) == {"error"} and param in error["error"], error
    unknown = await server.get("/api/nothing")
    assert unknown.status == 404 and "error" in await unknown.json()
