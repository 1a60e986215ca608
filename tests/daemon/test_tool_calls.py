"""Tool calling through the openai SDK against the real model: calls are generated under a grammar built
from the functions' parameter schemas, so they always name a real function with arguments that parse
and follow its schema; streamed calls come in OpenAI's delta shape; history with calls and results is
rendered; a template that knows Hermes-style calls gets them in its own format; bad input is a 400."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import openai
import pytest

from localllm.config import DEFAULT_MODEL
from localllm.daemon.engine.model_registry import registry_for
from tests.conftest import make_settings
from tests.daemon.test_api_openai import sdk

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone.",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 30}},
                   "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def assert_valid_calls(calls, names=("get_weather", "get_time")) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


async def client_for(make_client, settings=None, **options):
    return sdk(await make_client(settings or make_settings(cache={"enabled": False}), **options))


async def test_a_required_call_names_a_tool_and_follows_its_schema(make_client):
    client = await client_for(make_client)
    for temperature in (0.0, 1.0):
        reply = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, tools=[WEATHER, TIME],
                                                     tool_choice="required", temperature=temperature, seed=3,
                                                     max_tokens=300)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        assert_valid_calls(choice.message.tool_calls)


async def test_a_named_tool_choice_calls_that_function_once_without_parallel_calls(make_client):
    client = await client_for(make_client)
    reply = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=ASK, tools=[WEATHER, TIME], temperature=0, max_tokens=300,
        tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False)
    calls = reply.choices[0].message.tool_calls
    assert len(calls) == 1 and calls[0].function.name == "get_time"
    assert_valid_calls(calls, ("get_time",))


async def test_auto_answers_in_text_or_with_a_valid_call(make_client):
    client = await client_for(make_client)
    for question in ("What is the weather in Paris right now?", "Say hello."):
        reply = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": question}], tools=[WEATHER],
            temperature=0, max_tokens=60)
        message = reply.choices[0].message
        if message.tool_calls:
            assert reply.choices[0].finish_reason == "tool_calls"
            assert_valid_calls(message.tool_calls, ("get_weather",))
        else:
            assert message.content and not message.content.lstrip().startswith("{")
    none = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, tools=[WEATHER],
                                                tool_choice="none", temperature=0, max_tokens=20)
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


async def test_streamed_calls_come_in_openais_delta_shape(make_client):
    client = await client_for(make_client)
    stream = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, tools=[WEATHER, TIME],
                                                  tool_choice="required", temperature=0, max_tokens=300,
                                                  stream=True)
    calls: dict[int, dict] = {}
    finish = None
    async for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        assert not choice.delta.content
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        assert call["id"].startswith("call_") and call["name"] in SCHEMAS
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


async def test_history_with_calls_and_results_is_rendered(make_client):
    client = await client_for(make_client)
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius"})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    reply = await client.chat.completions.create(model=DEFAULT_MODEL, messages=history, tools=[WEATHER],
                                                 temperature=0, max_tokens=40)
    message = reply.choices[0].message
    assert message.content or message.tool_calls


async def test_tool_answers_are_cached_with_the_tools_in_the_scope(make_client):
    client = await client_for(make_client, make_settings())
    asks = dict(model=DEFAULT_MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0,
                max_tokens=300)
    first = await client.chat.completions.with_raw_response.create(**asks)
    again = await client.chat.completions.with_raw_response.create(**asks)
    assert (first.headers["X-LocalLLM-Cache"], again.headers["X-LocalLLM-Cache"]) == ("miss", "hit")
    assert_valid_calls(again.parse().choices[0].message.tool_calls, ("get_weather",))
    other = await client.chat.completions.with_raw_response.create(**{**asks, "tools": [TIME]})
    assert other.headers["X-LocalLLM-Cache"] == "miss"


@pytest.mark.parametrize(("change", "param", "says"), [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name",
     "Missing"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "absent"}}}, "tool_choice",
     "absent"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                               "patternProperties": {}}}}]},
     "tools[0].function.parameters", "patternProperties"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "same function name"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [WEATHER], "messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}}]}]},
     "messages[1].tool_calls[0]", "JSON object"),
    ({"tools": [WEATHER], "messages": [*ASK, {"role": "tool", "tool_call_id": "nobody", "content": "x"}]},
     "messages[1].tool_call_id", "no earlier assistant"),
    ({"tools": [WEATHER], "response_format": {"type": "json_object"}}, "response_format", "cannot be combined"),
])
async def test_bad_tool_requests_are_clear_400s(make_client, change, param, says):
    client = await client_for(make_client)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(**{"model": DEFAULT_MODEL, "messages": ASK, "max_tokens": 8, **change})
    assert refused.value.body["param"] == param and says in refused.value.body["message"], refused.value.body


HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call functions. <tools>{% for tool in tools %}{{ tool | tojson }}"
    "{% endfor %}</tools> Return each call as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>"
    "<|im_end|>\n{% endif %}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}")


async def test_a_hermes_template_gets_calls_in_its_own_format(make_client, default_model_file, tmp_path):
    hermes = tmp_path / "hermes.gguf"
    subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", "--chat-template",
                    HERMES_TEMPLATE, str(default_model_file), str(hermes)], check=True, capture_output=True)
    settings = make_settings(cache={"enabled": False})
    registry = registry_for(settings, ["hermes"], [hermes])
    registry.start_all()
    await registry.default.wait_ready()
    try:
        assert registry.default.engine.tool_format == "hermes"
        client = await client_for(make_client, settings, registry=registry)
        reply = await client.chat.completions.create(model="hermes", messages=ASK, tools=[WEATHER, TIME],
                                                     tool_choice="required", temperature=0, max_tokens=300)
        assert reply.choices[0].finish_reason == "tool_calls"
        assert_valid_calls(reply.choices[0].message.tool_calls)
    finally:
        await registry.stop_all()


async def test_the_guard_scans_tool_arguments_and_tool_results(make_client):
    server = await make_client(make_settings(cache={"enabled": False}))
    history = [{"role": "user", "content": "Call my colleague."},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_1", "type": "function", "function": {
                       "name": "lookup", "arguments": json.dumps({"who": "colleague"})}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "Reach her at jane.doe@example.com"},
               {"role": "assistant", "content": None, "tool_calls": [
                   {"id": "call_2", "type": "function", "function": {
                       "name": "dial", "arguments": json.dumps({"number": "+1 415 555 0132"})}}]},
               {"role": "tool", "tool_call_id": "call_2", "content": "ringing"}]
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
             for name in ("lookup", "dial")]
    plan = await (await server.post("/v1/route", json={"model": DEFAULT_MODEL, "messages": history,
                                                       "tools": tools})).json()
    found = {(f["message_index"], f["type"]) for f in plan["sensitive"]["findings"]}
    assert (2, "EMAIL_ADDRESS") in found and (3, "PHONE_NUMBER") in found, found
