"""The Anthropic Messages API, translated to and from the OpenAI shapes the daemon speaks.

Requests: system messages move into the top-level ``system`` field, ``max_tokens``
is required there, stop sequences are ``stop_sequences``. Answers: the named SSE
events (message_start, content_block_delta, message_delta, message_stop) become
TextDelta ... Finished, with Anthropic's stop reasons in OpenAI's words.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from localllm.errors import InvalidRequest
from localllm.fallback.errors import UpstreamBadResponse, UpstreamError, UpstreamRateLimited, UpstreamServerError, scrub
from localllm.fallback.providers import (
    PROGRESS,
    Progress,
    Provider,
    StreamEvent,
    UpstreamRequest,
    as_count,
    as_object,
    as_text,
)
from localllm.fallback.sse_reader import SSEEvent
from localllm.vocabulary import Finished, TextDelta, ToolCall

log = logging.getLogger(__name__)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
MAX_TEMPERATURE = 1.0  # Anthropic's range is 0..1, OpenAI's 0..2

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# A JSON response_format becomes a call Anthropic is made to make to this tool, whose input is the answer.
ANSWER_TOOL = "json_answer"
_WRAPPED = "value"  # a schema whose root is not an object is wrapped in one (a tool input is an object)
_TOOL_ID = re.compile(r"[^A-Za-z0-9_-]")


def split_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """(system prompt, the turns in Anthropic's shape): the system prompt goes apart, an assistant's calls
    become ``tool_use`` blocks and tool results ``tool_result`` blocks of the next user turn."""
    system: list[str] = []
    turns: list[dict] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role in ("system", "developer"):
            system.append(content)
        elif role == "assistant" and message.get("tool_calls"):
            blocks = [{"type": "text", "text": content}] if content else []
            blocks += [{"type": "tool_use", "id": _tool_id(call["id"]), "name": call["function"]["name"],
                        "input": json.loads(call["function"]["arguments"] or "{}")} for call in message["tool_calls"]]
            turns.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            result = {"type": "tool_result", "tool_use_id": _tool_id(message.get("tool_call_id") or ""),
                      "content": content}
            _user_blocks(turns).append(result)
        elif role == "user" and turns and turns[-1]["role"] == "user" and isinstance(turns[-1]["content"], list):
            if content:  # words after tool results go in the same user turn, after them
                turns[-1]["content"].append({"type": "text", "text": content})
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": content})
        else:
            raise InvalidRequest(f"Anthropic upstreams take system, user, assistant and tool messages, not "
                                 f"{role!r}.", param="messages")
    return ("\n\n".join(system) if system else None), turns


def _user_blocks(turns: list[dict]) -> list[dict]:
    """The content blocks of the user turn that tool results go into (a new one after the calls)."""
    if not turns or turns[-1]["role"] != "user" or not isinstance(turns[-1]["content"], list):
        turns.append({"role": "user", "content": []})
    return turns[-1]["content"]


def _tool_id(call_id: str) -> str:
    """Anthropic's tool ids are letters, digits, _ and -: others are mapped the same way each time."""
    return _TOOL_ID.sub("_", call_id) or "call"


def tool_fields(request: UpstreamRequest) -> dict:
    """``tools`` and ``tool_choice`` in Anthropic's shape; a JSON response_format as a forced tool call."""
    if request.response_format is not None and request.response_format.get("type") in ("json_object",
                                                                                      "json_schema"):
        schema, _ = answer_schema(request.response_format)
        return {"tools": [{"name": ANSWER_TOOL, "description": "Give the answer as this JSON.",
                           "input_schema": schema}],
                "tool_choice": {"type": "tool", "name": ANSWER_TOOL, "disable_parallel_tool_use": True}}
    if not request.tools:
        return {}
    tools = [{"name": t["function"]["name"], "description": t["function"].get("description") or "",
              "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
             for t in request.tools]
    choice = request.tool_choice
    if isinstance(choice, dict):
        anthropic_choice = {"type": "tool", "name": choice["function"]["name"]}
    else:
        anthropic_choice = {"type": {"required": "any", "none": "none"}.get(choice or "auto", "auto")}
    if request.parallel_tool_calls is False and anthropic_choice["type"] != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": anthropic_choice}


def answer_schema(response_format: dict) -> tuple[dict, bool]:
    """(the tool's input schema, whether the answer is wrapped in it under ``value``)."""
    if response_format.get("type") != "json_schema":
        return {"type": "object"}, False
    schema = as_object(response_format.get("json_schema")).get("schema")
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema, False
    return {"type": "object", "properties": {_WRAPPED: schema if isinstance(schema, dict) else {}},
            "required": [_WRAPPED]}, True


class AnthropicProvider(Provider):
    capabilities = frozenset({"tools", "json_output"})  # Anthropic's API reports no logprobs

    def build(self, request: UpstreamRequest, api_key: str | None) -> tuple[str, dict, dict[str, str]]:
        system, turns = split_system(request.messages)
        body: dict = {"model": self.settings.model, "messages": turns, "stream": True,
                      "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS, **tool_fields(request)}
        if system is not None:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = min(request.temperature, MAX_TEMPERATURE)
        elif request.top_p is not None:
            # Newer Claude models refuse temperature and top_p together; temperature wins.
            body["top_p"] = request.top_p
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        # Anthropic has no seed: requests that set one are still answered, just not reproducibly.
        headers = {"Accept": "text/event-stream", "anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return f"{self.settings.url}/v1/messages", body, headers

    def stream_chat(self, request: UpstreamRequest, api_key: str | None) -> AsyncIterator[StreamEvent]:
        json_answer = request.response_format is not None and request.response_format.get("type") != "text"
        wrapped = json_answer and answer_schema(request.response_format)[1]
        return self._shaped(super().stream_chat(request, api_key), json_answer, wrapped)

    @staticmethod
    async def _shaped(events: AsyncIterator, json_answer: bool, wrapped: bool) -> AsyncIterator[StreamEvent]:
        """The answer as the client asked for it. With a JSON response_format, the forced call's input is the
        answer's text (streamed as it comes, unless wrapped) and nothing else is."""
        try:
            async for event in events:
                if isinstance(event, _AnswerJSON):
                    yield TextDelta(event.text) if json_answer and not wrapped else PROGRESS
                elif not json_answer or isinstance(event, Progress):
                    yield event
                elif isinstance(event, ToolCall):
                    if wrapped and event.name == ANSWER_TOOL:
                        yield TextDelta(json.dumps(json.loads(event.arguments).get(_WRAPPED), ensure_ascii=False))
                elif isinstance(event, Finished):
                    reason = "stop" if event.finish_reason == "tool_calls" else event.finish_reason
                    yield Finished(reason, event.prompt_tokens, event.completion_tokens)
                else:
                    yield PROGRESS  # text beside the forced call is not part of a JSON answer
        finally:
            await events.aclose()

    async def translate(self, events: AsyncIterator[SSEEvent], api_key: str | None) -> AsyncIterator[StreamEvent]:
        input_tokens = output_tokens = 0
        stop_reason: str | None = None
        calls: dict[int, dict] = {}  # tool_use blocks being streamed, by block index
        async for event in events:
            payload = self.parse_json(event.data)
            kind = as_text(payload.get("type")) or event.event
            if kind == "message_start":
                usage = as_object(as_object(payload.get("message")).get("usage"))
                input_tokens = _prompt_tokens(usage)
                output_tokens = as_count(usage.get("output_tokens"))
            elif kind == "content_block_start":
                block = as_object(payload.get("content_block"))
                if block.get("type") == "tool_use":
                    calls[payload.get("index")] = {"call_id": as_text(block.get("id")),
                                                   "name": as_text(block.get("name")), "arguments": ""}
            elif kind == "content_block_delta":
                delta = as_object(payload.get("delta"))
                # Only text and tool input reach the client; thinking is not part of the answer.
                text = as_text(delta.get("text"))
                if delta.get("type") == "text_delta" and text:
                    yield TextDelta(text)
                partial = as_text(delta.get("partial_json"))
                if delta.get("type") == "input_json_delta" and partial:
                    call = calls.get(payload.get("index"))
                    if call is None:
                        raise self.bad("tool input for a block that is not a tool_use")
                    call["arguments"] += partial
                    yield _AnswerJSON(partial) if call["name"] == ANSWER_TOOL else PROGRESS
            elif kind == "content_block_stop":
                call = calls.pop(payload.get("index"), None)
                if call is not None:
                    yield self.tool_call(**call)
            elif kind == "message_delta":
                stop_reason = as_text(as_object(payload.get("delta")).get("stop_reason")) or stop_reason
                usage = as_object(payload.get("usage"))
                output_tokens = as_count(usage.get("output_tokens")) or output_tokens
                if usage.get("input_tokens") is not None:  # newer API versions repeat the final count here
                    input_tokens = _prompt_tokens(usage)
            elif kind == "message_stop":
                yield Finished(self.finish_reason(stop_reason), input_tokens, output_tokens)
                return
            elif kind == "error":
                raise self._stream_error(as_object(payload.get("error")), api_key)
            # ping and event types added later carry nothing we need.
        raise self.bad("the stream ended before message_stop")

    def finish_reason(self, stop_reason: str | None) -> str:
        if stop_reason is None:
            return "stop"
        mapped = FINISH_REASONS.get(stop_reason)
        if mapped is None:
            log.warning("upstream %s: unknown Anthropic stop_reason %r, reported as 'stop'", self.name, stop_reason)
            return "stop"
        return mapped

    def _stream_error(self, error: dict, api_key: str | None) -> UpstreamError:
        error_type = str(error.get("type") or "error")
        message = (f"Upstream {self.name!r} sent an error event ({error_type}): "
                   f"{scrub(str(error.get('message') or ''), api_key)}")
        if error_type == "overloaded_error":
            return UpstreamServerError(self.name, message)
        if error_type == "rate_limit_error":
            return UpstreamRateLimited(self.name, message)
        return UpstreamBadResponse(self.name, message)


def _prompt_tokens(usage: dict) -> int:
    # input_tokens leaves out prompt-cache reads and writes; the prompt is all three.
    return sum(as_count(usage.get(key)) for key in
               ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


@dataclass(frozen=True)
class _AnswerJSON:
    """A piece of the forced answer tool's input, as it streams: the JSON answer's text."""

    text: str
