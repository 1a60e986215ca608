"""The Anthropic Messages API, translated to and from the OpenAI shapes the daemon speaks.

Requests: system messages move into the top-level ``system`` field, ``max_tokens``
is required there, stop sequences are ``stop_sequences``. Answers: the named SSE
events (message_start, content_block_delta, message_delta, message_stop) become
TextDelta ... Finished, with Anthropic's stop reasons in OpenAI's words.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from localllm.errors import InvalidRequest
from localllm.fallback.errors import UpstreamBadResponse, UpstreamError, UpstreamRateLimited, UpstreamServerError, scrub
from localllm.fallback.providers import Provider, StreamEvent, UpstreamRequest, as_count, as_object, as_text
from localllm.fallback.sse_reader import SSEEvent
from localllm.vocabulary import Finished, TextDelta

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


def split_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """(system prompt, the user/assistant turns): Anthropic takes the system prompt apart."""
    system: list[str] = []
    turns: list[dict] = []
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            system.append(message["content"])
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": message["content"]})
        else:
            raise InvalidRequest(f"Anthropic upstreams take system, user and assistant messages, not {role!r}.",
                                 param="messages")
    return ("\n\n".join(system) if system else None), turns


class AnthropicProvider(Provider):
    def build(self, request: UpstreamRequest, api_key: str | None) -> tuple[str, dict, dict[str, str]]:
        system, turns = split_system(request.messages)
        body: dict = {"model": self.settings.model, "messages": turns, "stream": True,
                      "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS}
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

    async def translate(self, events: AsyncIterator[SSEEvent], api_key: str | None) -> AsyncIterator[StreamEvent]:
        input_tokens = output_tokens = 0
        stop_reason: str | None = None
        async for event in events:
            payload = self.parse_json(event.data)
            kind = as_text(payload.get("type")) or event.event
            if kind == "message_start":
                usage = as_object(as_object(payload.get("message")).get("usage"))
                input_tokens = _prompt_tokens(usage)
                output_tokens = as_count(usage.get("output_tokens"))
            elif kind == "content_block_delta":
                delta = as_object(payload.get("delta"))
                # Only text reaches the client; thinking and tool-input deltas are not part of the answer.
                text = as_text(delta.get("text"))
                if delta.get("type") == "text_delta" and text:
                    yield TextDelta(text)
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
            # ping, content_block_start/stop and event types added later carry nothing we need.
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
