"""Tools, JSON output and logprobs through the upstream providers, against the fake upstream (which
refuses what the real APIs refuse): OpenAI-compatible upstreams get them as they are; Anthropic gets
tools and history as tool_use / tool_result blocks and JSON output as a forced tool call, and its
answers come back as OpenAI's tool calls and text."""

from __future__ import annotations

import json

import pytest

from localllm.fallback.anthropic_translation import ANSWER_TOOL, split_system
from localllm.fallback.errors import UpstreamBadResponse
from localllm.fallback.providers import UpstreamRequest
from localllm.vocabulary import AnswerText, Finished, TextDelta, ToolCall
from tests.fallback.conftest import upstream_settings

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}

# A conversation where the assistant called two tools and got both results, with ids as some
# clients make them (Anthropic's own ids allow only letters, digits, _ and -).
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "call:1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call.2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call:1", "content": "Sunny, 21 C"},
    {"role": "tool", "tool_call_id": "call.2", "content": "14:05"},
    {"role": "user", "content": "Thanks. And tomorrow?"},
]


async def answer(upstream, request: UpstreamRequest) -> AnswerText:
    events = [event async for event in upstream.stream_chat(request, "sk-test")]
    assert isinstance(events[-1], Finished), events
    return AnswerText.of(events)


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_tool_calls_come_back_whole_with_text_before_them(fake_upstream, make_registry, kind):
    fake_upstream.calls = [("get_weather", {"city": "Paris"}), ("get_time", {})]
    fake_upstream.text = "Checking."
    upstream = make_registry(upstream_settings(fake_upstream, kind=kind)).get(f"fake-{kind}")
    request = UpstreamRequest(messages=HISTORY[:2], tools=[WEATHER, TIME], tool_choice="auto")
    result = await answer(upstream, request)
    assert result.text == "Checking."
    assert [(c.name, json.loads(c.arguments)) for c in result.calls] == fake_upstream.calls
    assert all(c.id for c in result.calls) and len({c.id for c in result.calls}) == 2
    assert result.finished.finish_reason == "tool_calls"


async def test_openai_compatible_gets_tools_history_and_format_as_they_are(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    choice = {"type": "function", "function": {"name": "get_weather"}}
    await answer(upstream, UpstreamRequest(messages=HISTORY, tools=[WEATHER, TIME], tool_choice=choice,
                                           parallel_tool_calls=False))
    body = fake_upstream.received[-1].body
    assert body["messages"] == HISTORY
    assert (body["tools"], body["tool_choice"], body["parallel_tool_calls"]) == ([WEATHER, TIME], choice, False)
    schema = {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}}
    await answer(upstream, UpstreamRequest(messages=HISTORY[:2], response_format=schema))
    assert fake_upstream.received[-1].body["response_format"] == schema
    assert "tools" not in fake_upstream.received[-1].body


async def test_openai_compatible_logprobs_reach_the_text(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    result = await answer(upstream, UpstreamRequest(messages=HISTORY[:2], top_logprobs=2))
    body = fake_upstream.received[-1].body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 2)
    assert "".join(t.token for t in result.logprobs) == result.text
    assert all(t.logprob == -0.25 and len(t.top) == 2 and t.bytes == tuple(t.token.encode())
               for t in result.logprobs)
    await answer(upstream, UpstreamRequest(messages=HISTORY[:2], top_logprobs=0))
    assert fake_upstream.received[-1].body["logprobs"] is True
    assert "top_logprobs" not in fake_upstream.received[-1].body


def test_history_becomes_tool_use_and_tool_result_blocks():
    system, turns = split_system(HISTORY)
    assert system == "Be brief."
    assert turns == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "Sunny, 21 C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "14:05"},
            {"type": "text", "text": "Thanks. And tomorrow?"}]},
    ]


@pytest.mark.parametrize(("choice", "parallel", "expected"), [
    ("auto", None, {"type": "auto"}),
    (None, None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "get_time"}}, None, {"type": "tool", "name": "get_time"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
])
async def test_anthropic_gets_tools_and_tool_choice_in_its_shape(fake_upstream, make_registry, choice, parallel,
                                                                 expected):
    fake_upstream.calls = [("get_time", {})]
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    result = await answer(upstream, UpstreamRequest(messages=HISTORY, tools=[WEATHER, TIME], tool_choice=choice,
                                                    parallel_tool_calls=parallel))
    body = fake_upstream.received[-1].body  # the fake refuses (400) any history Anthropic would refuse
    assert body["tools"] == [{"name": "get_weather", "description": "The weather in a city.",
                              "input_schema": WEATHER["function"]["parameters"]},
                             {"name": "get_time", "description": "", "input_schema": {"type": "object",
                                                                                      "properties": {}}}]
    assert body["tool_choice"] == expected
    assert [c.name for c in result.calls] == ["get_time"]


@pytest.mark.parametrize("stream_schema", [
    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    {"type": "array", "items": {"type": "string"}},  # not an object: wrapped for the tool, unwrapped back
])
async def test_anthropic_json_output_is_a_forced_tool_call_answered_as_text(fake_upstream, make_registry,
                                                                           stream_schema):
    wrapped = stream_schema["type"] != "object"
    fake_upstream.forced_input = {"value": ["Paris", "Lyon"]} if wrapped else {"answer": "Paris"}
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    response_format = {"type": "json_schema", "json_schema": {"name": "cities", "schema": stream_schema}}
    result = await answer(upstream, UpstreamRequest(messages=HISTORY[:2], response_format=response_format))
    body = fake_upstream.received[-1].body
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL, "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"]["type"] == "object"
    assert json.loads(result.text) == (["Paris", "Lyon"] if wrapped else {"answer": "Paris"})
    assert (result.calls, result.finished.finish_reason) == ([], "stop")
    # The unwrapped answer streams as it comes: several text pieces, not one at the end.
    events = [e async for e in upstream.stream_chat(UpstreamRequest(messages=HISTORY[:2],
                                                                    response_format=response_format), None)]
    assert sum(isinstance(e, TextDelta) for e in events) == (1 if wrapped else len(json.dumps(
        fake_upstream.forced_input)) // 7 + 1)


async def test_anthropic_json_object_asks_for_any_object(fake_upstream, make_registry):
    upstream = make_registry(upstream_settings(fake_upstream, kind="anthropic")).get("fake-anthropic")
    result = await answer(upstream, UpstreamRequest(messages=HISTORY[:2],
                                                    response_format={"type": "json_object"}))
    assert fake_upstream.received[-1].body["tools"][0]["input_schema"] == {"type": "object"}
    assert json.loads(result.text) == fake_upstream.forced_input


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_a_call_whose_arguments_are_not_an_object_is_a_bad_response(fake_upstream, make_registry, kind):
    fake_upstream.calls = [("get_time", ["not", "an", "object"])]
    upstream = make_registry(upstream_settings(fake_upstream, kind=kind, max_retries=0)).get(f"fake-{kind}")
    with pytest.raises(UpstreamBadResponse, match="not a JSON object"):
        await answer(upstream, UpstreamRequest(messages=HISTORY[:2], tools=[TIME]))


async def test_fake_refuses_what_anthropic_refuses(fake_upstream, make_registry):
    """The checks the translation is tested against do bite: a tool result nobody asked for is a 400."""
    from localllm.fallback.errors import UpstreamRejected

    upstream = make_registry(upstream_settings(fake_upstream, kind="openai-compatible")).get(
        "fake-openai-compatible")
    orphan = [{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}]
    with pytest.raises(UpstreamRejected, match="HTTP 400"):
        await answer(upstream, UpstreamRequest(messages=orphan))
    from tests.fallback.fake_upstream import anthropic_request_problem

    _, turns = split_system(HISTORY)
    assert anthropic_request_problem({"messages": turns}) is None
    dropped = [turns[0], turns[1], {"role": "user", "content": [turns[2]["content"][0]]}]
    assert "without `tool_result`" in anthropic_request_problem({"messages": dropped})
    assert "alternate" in anthropic_request_problem({"messages": [turns[0], turns[0]]})


def test_tool_call_event_survives_the_answer_text():
    text = AnswerText.of([TextDelta("a"), ToolCall("c1", "f", "{}"), Finished("tool_calls", 1, 2)])
    assert (text.text, text.calls, text.started) == ("a", [ToolCall("c1", "f", "{}")], True)


@pytest.mark.parametrize("kind", ["openai-compatible", "anthropic"])
async def test_a_long_call_whose_arguments_keep_coming_is_not_a_stall(fake_upstream, make_registry, kind):
    """Arguments arriving piece by piece for longer than the stall limit: the upstream is alive."""
    fake_upstream.calls, fake_upstream.text = [("get_weather", {"city": "Paris " * 20})], ""
    fake_upstream.chunk_delay_s = 0.1  # ~20 pieces: 2 s in all, the stall limit is 0.5 s
    settings = upstream_settings(fake_upstream, kind=kind, first_byte_timeout_s=0.5, max_retries=0)
    upstream = make_registry(settings).get(f"fake-{kind}")
    result = await answer(upstream, UpstreamRequest(messages=HISTORY[:2], tools=[WEATHER]))
    assert json.loads(result.calls[0].arguments) == {"city": "Paris " * 20}
    assert len(fake_upstream.received) == 1  # one attempt: nothing timed out


async def test_calls_that_share_an_index_are_told_apart_by_their_ids(fake_upstream, make_registry):
    """Some OpenAI-compatible servers send every call at index 0: a new id starts a new call."""
    from localllm.fallback.openai_translation import _CallParts

    upstream = make_registry(upstream_settings(fake_upstream)).get("fake-openai-compatible")
    parts = _CallParts(upstream.provider)
    first = parts.add([{"index": 0, "id": "a", "function": {"name": "get_time", "arguments": "{}"}}])
    second = parts.add([{"index": 0, "id": "b", "function": {"name": "get_weather", "arguments": '{"city"'}},
                        {"index": 0, "function": {"name": "get_weather", "arguments": ': "Rome"}'}}])
    rest = parts.rest()
    assert first == [] and [c.name for c in second] == ["get_time"]
    assert [(c.id, c.name, json.loads(c.arguments)) for c in rest] == [("b", "get_weather", {"city": "Rome"})]
