"""The fake upstream is only worth testing against if it speaks the real wire formats:
the official openai and anthropic SDKs must parse its answers, JSON and streamed."""

from __future__ import annotations

import anthropic
import openai

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def openai_sdk(server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="sk-test", max_retries=0, timeout=10)


def anthropic_sdk(server) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.root, api_key="sk-ant-test", max_retries=0, timeout=10)


async def test_openai_sdk_parses_json_answer(fake_upstream):
    completion = await openai_sdk(fake_upstream).chat.completions.create(model="m", messages=QUESTION)
    assert completion.choices[0].message.content == fake_upstream.text
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == fake_upstream.prompt_tokens
    assert completion.usage.completion_tokens == 6


async def test_openai_sdk_parses_stream_with_usage(fake_upstream):
    stream = await openai_sdk(fake_upstream).chat.completions.create(
        model="m", messages=QUESTION, max_tokens=3, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paris is the"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3


async def test_openai_sdk_sees_rate_limit_with_retry_after(fake_upstream):
    from tests.fallback.fake_upstream import Fault

    fake_upstream.fail_next(Fault("http_429", retry_after="7"))
    try:
        await openai_sdk(fake_upstream).chat.completions.create(model="m", messages=QUESTION)
    except openai.RateLimitError as exc:
        assert exc.response.headers["Retry-After"] == "7"
        assert exc.message.endswith("Rate limit reached.")
    else:
        raise AssertionError("the SDK accepted a 429")


async def test_anthropic_sdk_parses_json_answer(fake_upstream):
    message = await anthropic_sdk(fake_upstream).messages.create(
        model="claude-test", max_tokens=100, system="Be brief.", messages=QUESTION)
    assert message.content[0].text == fake_upstream.text
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (fake_upstream.prompt_tokens, 6)


async def test_anthropic_sdk_parses_stream(fake_upstream):
    async with anthropic_sdk(fake_upstream).messages.stream(
            model="claude-test", max_tokens=2, messages=QUESTION) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "Paris is"
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 2
    assert final.usage.input_tokens == fake_upstream.prompt_tokens


async def test_anthropic_sdk_raw_events_are_the_documented_sequence(fake_upstream):
    stream = await anthropic_sdk(fake_upstream).messages.create(
        model="claude-test", max_tokens=100, messages=QUESTION, stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert "content_block_delta" in kinds


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


async def test_openai_sdk_assembles_streamed_tool_calls_and_logprobs(fake_upstream):
    fake_upstream.calls = [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})]
    async with openai_sdk(fake_upstream).chat.completions.stream(
            model="m", messages=QUESTION, tools=[TOOL], logprobs=True, top_logprobs=2) as stream:
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Lyon"}')]
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content == fake_upstream.text


async def test_openai_sdk_parses_whole_tool_calls(fake_upstream):
    fake_upstream.calls, fake_upstream.text = [("get_weather", {"city": "Paris"})], ""
    completion = await openai_sdk(fake_upstream).chat.completions.create(model="m", messages=QUESTION, tools=[TOOL])
    message = completion.choices[0].message
    assert message.content is None and message.tool_calls[0].function.arguments == '{"city": "Paris"}'


async def test_anthropic_sdk_assembles_streamed_tool_use(fake_upstream):
    fake_upstream.calls = [("get_weather", {"city": "Paris"})]
    tool = {"name": "get_weather", "input_schema": TOOL["function"]["parameters"]}
    async with anthropic_sdk(fake_upstream).messages.stream(
            model="claude-test", max_tokens=50, messages=QUESTION, tools=[tool]) as stream:
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["text", "tool_use"]
    assert (final.content[1].name, final.content[1].input) == ("get_weather", {"city": "Paris"})
    assert final.stop_reason == "tool_use"
