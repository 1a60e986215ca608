"""Property tests for every parser that reads what someone else wrote: request bodies, SSE framing both
ways, the OpenAI and Anthropic stream translations, and the GGUF header reader. Whatever the input,
each either gives a well-formed result or raises its own clear error, never anything else."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localllm.config import UpstreamSettings
from localllm.daemon.models.gguf_info import read_gguf_info
from localllm.daemon.requests import ChatCompletionRequest, CompletionRequest, parse_request
from localllm.errors import InvalidGGUF, InvalidRequest
from localllm.fallback.anthropic_translation import AnthropicProvider
from localllm.fallback.errors import UpstreamError
from localllm.fallback.openai_translation import OpenAIChatProvider
from localllm.fallback.sse_reader import SSEEvent, read_sse
from localllm.vocabulary import Finished, TextDelta
from tests.daemon.synthetic_gguf import tiny_gguf_bytes

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                max_size=4), max_leaves=12)
CHAT_KEYS = ["model", "messages", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
             "logit_bias", "n", "tools", "response_format", "localllm", "stream_options", "logprobs", "role",
             "content"]
# Objects shaped like the real thing: known keys with any JSON under them.
CHAT_LIKE = st.dictionaries(st.sampled_from(CHAT_KEYS), JSON, max_size=8) | st.fixed_dictionaries(
    {"model": st.text(max_size=8), "messages": st.lists(st.dictionaries(st.sampled_from(CHAT_KEYS), JSON,
                                                                        max_size=3), max_size=3)},
    optional={key: JSON for key in CHAT_KEYS if key not in ("model", "messages")})
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(coro):
    return asyncio.run(coro)


async def _lines(chunks):
    for chunk in chunks:
        yield chunk


async def _events(items):
    for item in items:
        yield item


# -- request bodies ---------------------------------------------------------------------------------


@FAST
@given(body=JSON | CHAT_LIKE)
def test_any_json_body_parses_or_is_a_clear_400(body):
    for model in (ChatCompletionRequest, CompletionRequest):
        try:
            parsed = parse_request(model, body)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.message
        else:
            assert isinstance(parsed, model)
            if isinstance(parsed, ChatCompletionRequest):
                parsed.facts()  # what the pipeline does next works on anything that parsed


# -- SSE --------------------------------------------------------------------------------------------

EVENT_NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters=":"),
                      max_size=10)
DATA = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), min_size=1,
               max_size=30).filter(lambda text: text.strip() == text)


@FAST
@given(events=st.lists(st.tuples(EVENT_NAMES, st.lists(DATA, min_size=1, max_size=3)), max_size=6))
def test_sse_frames_read_back_as_the_events_written(events):
    text = ""
    for name, lines in events:
        text += (f"event: {name}\n" if name else "") + "".join(f"data: {line}\n" for line in lines) + "\n"
    raw = [line + b"\n" for line in text.encode().split(b"\n")[:-1]]

    async def read():
        return [event async for event in read_sse(_lines(raw))]

    expected = [SSEEvent(name or "message", "\n".join(lines)) for name, lines in events]
    assert run(read()) == expected


@FAST
@given(payloads=st.lists(JSON, max_size=5))
def test_what_the_daemon_streams_is_read_back_exactly(payloads):
    """The daemon's frames (SSEWriter: `data: <json>`) through the SSE reader its upstream side uses."""
    body = b"".join(b"data: " + json.dumps(p, ensure_ascii=False).encode() + b"\n\n" for p in payloads)
    body += b"data: [DONE]\n\n"
    raw = [line + b"\n" for line in body.split(b"\n")[:-1]]

    async def read():
        return [event.data async for event in read_sse(_lines(raw))]

    assert [json.loads(data) for data in run(read())[:-1]] == payloads


@FAST
@given(lines=st.lists(st.binary(max_size=40), max_size=8))
def test_any_bytes_read_as_sse_never_crash(lines):
    async def read():
        return [event async for event in read_sse(_lines(lines))]

    for event in run(read()):
        assert isinstance(event.data, str)


# -- upstream stream translations -------------------------------------------------------------------


def _provider(kind: str):
    settings_ = UpstreamSettings(name="up", kind=kind, base_url="http://127.0.0.1:9", trust="cloud", model="m")
    return (AnthropicProvider if kind == "anthropic" else OpenAIChatProvider)(settings_, lambda: None)


def _translate(kind: str, events: list[SSEEvent]) -> list:
    async def collect():
        return [item async for item in _provider(kind).translate(_events(events), None)]

    return run(collect())


WIRE_KEYS = ["type", "message", "usage", "delta", "text", "choices", "content", "finish_reason", "error",
             "input_tokens", "output_tokens", "cache_read_input_tokens", "stop_reason", "prompt_tokens",
             "completion_tokens", "index"]
WIRE_VALUES = JSON | st.sampled_from(["message_start", "content_block_delta", "message_delta", "message_stop",
                                      "error", "text_delta", "stop", "length", "end_turn", "max_tokens"])
# Objects shaped like the upstreams' events: their keys, any JSON (or their own words) under them, nested.
WIRE_LIKE = st.recursive(st.dictionaries(st.sampled_from(WIRE_KEYS), WIRE_VALUES, max_size=5),
                         lambda inner: st.dictionaries(st.sampled_from(WIRE_KEYS), inner | WIRE_VALUES |
                                                       st.lists(inner, max_size=2), max_size=5), max_leaves=10)
STREAM_EVENTS = st.lists(st.tuples(st.sampled_from(["message", "message_start", "content_block_delta",
                                                    "message_delta", "message_stop", "error", "ping"]),
                                   JSON | WIRE_LIKE), max_size=6)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["openai-compatible", "anthropic"]), events=STREAM_EVENTS)
def test_any_upstream_stream_translates_or_is_an_upstream_error(kind, events):
    sse = [SSEEvent(name, json.dumps(payload)) for name, payload in events]
    try:
        out = _translate(kind, sse)
    except UpstreamError:
        return
    assert out and isinstance(out[-1], Finished) and all(isinstance(item, TextDelta) for item in out[:-1])


@FAST
@given(pieces=st.lists(st.text(min_size=1, max_size=10), max_size=6), prompt=st.integers(0, 10**6),
       completion=st.integers(0, 10**6))
def test_a_well_formed_anthropic_stream_comes_through_whole(pieces, prompt, completion):
    events = [SSEEvent("message_start", json.dumps({"type": "message_start",
                                                    "message": {"usage": {"input_tokens": prompt}}}))]
    events += [SSEEvent("content_block_delta", json.dumps({"type": "content_block_delta",
                                                           "delta": {"type": "text_delta", "text": piece}}))
               for piece in pieces]
    events += [SSEEvent("message_delta", json.dumps({"type": "message_delta", "delta": {"stop_reason": "max_tokens"},
                                                     "usage": {"output_tokens": completion}})),
               SSEEvent("message_stop", json.dumps({"type": "message_stop"}))]
    out = _translate("anthropic", events)
    assert "".join(item.text for item in out[:-1]) == "".join(pieces)
    assert out[-1] == Finished("length", prompt, completion)


# -- GGUF headers -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_truncated_or_damaged_gguf_headers_are_invalid_gguf(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("gguf")
    good = tiny_gguf_bytes(folder)
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        blob = good[:data.draw(st.integers(0, len(good) - 1))]
    elif kind == "flip":
        position = data.draw(st.integers(0, min(len(good), 4096) - 1))
        blob = good[:position] + bytes([good[position] ^ data.draw(st.integers(1, 255))]) + good[position + 1:]
    else:
        blob = b"GGUF" + data.draw(st.binary(max_size=200))
    path = folder / "model.gguf"
    path.write_bytes(blob)
    try:
        info = read_gguf_info(path)
    except InvalidGGUF as exc:
        assert exc.reason
    else:
        assert info.tensor_count >= 0 and info.file_size == len(blob)
