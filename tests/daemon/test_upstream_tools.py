"""Tools, JSON output and logprobs on requests that an upstream answers. Real daemon app, model, guard,
embedder and cache; the fake cloud speaks OpenAI's or Anthropic's wire format (and refuses what they
refuse); the clients are the official openai and ollama SDKs."""

from __future__ import annotations

import json

import ollama
import pytest

from localllm.config import DEFAULT_MODEL
from localllm.store.database import open_database
from tests.daemon.test_api_openai import sdk
from tests.daemon.test_route_decisions import PLACEHOLDER, with_updates
from tests.daemon.test_upstream_route import settings_with

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
EMAIL = "alice.smith@example.com"


def anthropic_settings(fake, **extra):
    return settings_with(fake, kind="anthropic", base_url=fake.root, model="claude-test", **extra)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_upstream_tool_calls_reach_the_sdk_whole_and_streamed(make_client, fake_cloud, upstream_key, kind):
    fake_cloud.calls, fake_cloud.text = [("get_weather", {"city": "Paris"})], "Checking."
    settings = settings_with(fake_cloud) if kind == "openai" else anthropic_settings(fake_cloud)
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[WEATHER],
                                                                 tool_choice="required", max_tokens=50)
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    # Anthropic, made to call a tool (tool_choice "any"), says nothing before the call.
    assert choice.message.content == ("Checking." if kind == "openai" else None)
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]
    sent = fake_cloud.received[-1].body
    if kind == "openai":
        assert (sent["tools"], sent["tool_choice"]) == ([WEATHER], "required")
    else:
        assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
        assert sent["tool_choice"] == {"type": "any"}

    async with client.chat.completions.stream(model="cloudy", messages=ASK, tools=[WEATHER],
                                              max_tokens=50) as stream:
        final = await stream.get_final_completion()
    streamed = final.choices[0]
    assert streamed.finish_reason == "tool_calls" and streamed.message.content == "Checking."
    assert json.loads(streamed.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert streamed.message.tool_calls[0].id.strip()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_tool_history_goes_to_the_upstream_structured(make_client, fake_cloud, upstream_key, kind):
    settings = settings_with(fake_cloud) if kind == "openai" else anthropic_settings(fake_cloud)
    client = sdk(await make_client(settings))
    history = [*ASK,
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call|7", "type": "function", "function": {
                   "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
               {"role": "tool", "tool_call_id": "call|7", "content": "Sunny, 21 C"}]
    answer = await client.chat.completions.create(model="cloudy", messages=history, tools=[WEATHER], max_tokens=50)
    assert answer.choices[0].message.content == fake_cloud.text  # the fake took the history (else a 400)
    sent = fake_cloud.received[-1].body["messages"]
    if kind == "openai":
        assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
        assert sent[2] == {"role": "tool", "content": "Sunny, 21 C", "tool_call_id": "call|7"}
    else:
        assert sent[1]["content"] == [{"type": "tool_use", "id": "call_7", "name": "get_weather",
                                       "input": {"city": "Paris"}}]
        assert sent[2]["content"] == [{"type": "tool_result", "tool_use_id": "call_7", "content": "Sunny, 21 C"}]


async def test_sensitive_values_in_tool_arguments_and_results_are_redacted_and_restored(make_client, fake_cloud,
                                                                                        upstream_key):
    # The fake calls a tool with every placeholder it was sent: the client must get the real values back.
    def call_with_placeholders(body: dict) -> list:
        return [("send_mail", {"to": PLACEHOLDER.findall(json.dumps(body["messages"]))})]

    fake_cloud.calls_from, fake_cloud.text = call_with_placeholders, ""
    client = sdk(await make_client(settings_with(fake_cloud)))
    mail = {"type": "function", "function": {"name": "send_mail", "parameters": {"type": "object"}}}
    history = [{"role": "user", "content": "Look up the customer and mail them."},
               {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                   "name": "lookup", "arguments": json.dumps({"email": EMAIL, "note": "VIP"})}}]},
               {"role": "tool", "tool_call_id": "c1", "content": f"Customer: bob.jones@example.org, {EMAIL}"}]
    raw = await client.chat.completions.with_raw_response.create(model="cloudy", messages=history, tools=[mail],
                                                                 max_tokens=50)
    out = json.dumps(fake_cloud.received[-1].body["messages"])
    assert EMAIL not in out and "bob.jones@example.org" not in out
    sent = fake_cloud.received[-1].body["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"email": "[EMAIL_ADDRESS_1]",
                                                                             "note": "VIP"}
    assert sent[2]["content"] == "Customer: [EMAIL_ADDRESS_2], [EMAIL_ADDRESS_1]"
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
    call = raw.parse().choices[0].message.tool_calls[0]
    assert sorted(json.loads(call.function.arguments)["to"]) == sorted([EMAIL, EMAIL, "bob.jones@example.org"])
    audit = next(open_database().query("SELECT * FROM egress_audit ORDER BY id DESC LIMIT 1"))
    assert (audit["action"], json.loads(audit["redacted"])) == ("redact", {"EMAIL_ADDRESS": 3})


async def test_json_schema_answer_from_anthropic_is_the_forced_tools_input(make_client, fake_cloud, upstream_key):
    fake_cloud.forced_input = {"city": "Paris", "sunny": True}
    client = sdk(await make_client(anthropic_settings(fake_cloud)))
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
              "required": ["city", "sunny"]}
    response_format = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema, "strict": True}}
    answer = await client.chat.completions.create(model="cloudy", messages=ASK, response_format=response_format,
                                                  max_tokens=50)
    assert json.loads(answer.choices[0].message.content) == fake_cloud.forced_input
    assert answer.choices[0].finish_reason == "stop"
    stream = await client.chat.completions.create(model="cloudy", messages=ASK, response_format=response_format,
                                                  max_tokens=50, stream=True)
    chunks = [c async for c in stream]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == fake_cloud.forced_input
    assert fake_cloud.received[-1].body["tools"][0]["input_schema"] == schema


async def test_logprobs_pass_through_openai_and_stay_local_for_anthropic(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    answer = await client.chat.completions.create(model="cloudy", messages=ASK, logprobs=True, top_logprobs=2,
                                                  max_tokens=50)
    tokens = answer.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == answer.choices[0].message.content == fake_cloud.text
    assert all(len(t.top_logprobs) == 2 for t in tokens)

    received = len(fake_cloud.received)
    client = sdk(await make_client(anthropic_settings(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, logprobs=True,
                                                                 max_tokens=4)
    assert (raw.headers["X-LocalLLM-Route"], raw.headers["X-LocalLLM-Fallback-Reason"]) == (
        "local", "upstream_unsupported")
    assert raw.parse().choices[0].logprobs.content
    assert len(fake_cloud.received) == received


async def test_deterministic_upstream_tool_answer_is_cached_and_replayed_as_calls(make_client, fake_cloud,
                                                                                  upstream_key):
    fake_cloud.calls, fake_cloud.text = [("get_weather", {"city": "Paris"})], ""
    client = sdk(await make_client(with_updates(settings_with(fake_cloud), cache={"enabled": True})))
    first = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[WEATHER],
                                                                   temperature=0, max_tokens=50)
    assert first.headers["X-LocalLLM-Cache"] == "miss"
    again = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[WEATHER],
                                                                   temperature=0, max_tokens=50)
    assert again.headers["X-LocalLLM-Cache"] == "hit" and len(fake_cloud.received) == 1
    calls = [again.parse().choices[0].message.tool_calls, first.parse().choices[0].message.tool_calls]
    assert [(c[0].function.name, c[0].function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Paris"}')] * 2
    assert calls[0][0].id != calls[1][0].id  # every answer's calls get their own ids
    assert again.parse().choices[0].finish_reason == "tool_calls"
    # Other tools are another question: not a hit.
    other = {"type": "function", "function": {**WEATHER["function"], "name": "get_forecast"}}
    third = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[other],
                                                                   temperature=0, max_tokens=50)
    assert third.headers["X-LocalLLM-Cache"] == "miss" and len(fake_cloud.received) == 2


async def test_ollama_client_gets_upstream_tool_calls(make_client, fake_cloud, upstream_key):
    fake_cloud.calls, fake_cloud.text = [("get_weather", {"city": "Paris"})], ""
    app_client = await make_client(settings_with(fake_cloud))
    client = ollama.AsyncClient(host=str(app_client.make_url("")).rstrip("/"))
    response = await client.chat(model="cloudy", messages=ASK, tools=[WEATHER], options={"num_predict": 50})
    assert response.message.tool_calls[0].function.name == "get_weather"
    assert response.message.tool_calls[0].function.arguments == {"city": "Paris"}
    parts = [part async for part in await client.chat(model="cloudy", messages=ASK, tools=[WEATHER], stream=True)]
    calls = [c for part in parts for c in part.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert parts[-1].done


async def test_a_local_model_named_with_tools_stays_local(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(model=DEFAULT_MODEL, messages=ASK,
                                                                 tools=[WEATHER], max_tokens=30, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "local" and fake_cloud.received == []


async def test_sensitive_values_in_tool_definitions_keep_the_request_local(make_client, fake_cloud, upstream_key):
    """Tool definitions and schemas cannot be redacted: what the policy would redact keeps them here."""
    app_client = await make_client(settings_with(fake_cloud))
    client = sdk(app_client)
    mail = {"type": "function", "function": {"name": "send_mail", "description": f"Mails go to {EMAIL} only.",
                                             "parameters": {"type": "object"}}}
    raw = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[mail],
                                                                 max_tokens=20)
    assert (raw.headers["X-LocalLLM-Route"], raw.headers["X-LocalLLM-Fallback-Reason"]) == (
        "local", "redaction_incomplete")
    explained = await app_client.post("/v1/route", json={"model": "cloudy", "messages": ASK, "tools": [mail]})
    plan = await explained.json()
    assert (plan["target"]["route"], plan["fallback_reason"]) == ("local", "redaction_incomplete")
    assert fake_cloud.received == []
    # The same tools with nothing sensitive go.
    clean = {"type": "function", "function": {**mail["function"], "description": "Sends a mail."}}
    raw = await client.chat.completions.with_raw_response.create(model="cloudy", messages=ASK, tools=[clean],
                                                                 max_tokens=20)
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
