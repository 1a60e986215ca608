"""The OpenAI chat-completions wire format, for OpenAI itself and every compatible engine.

Usage comes in a last chunk with empty ``choices`` when ``stream_options.include_usage``
is honoured; servers that ignore it (older engines) report no usage, and the
counts stay 0 rather than being guessed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from localllm.fallback.errors import UpstreamBadResponse, UpstreamError, scrub
from localllm.fallback.providers import (
    PROGRESS,
    Provider,
    StreamEvent,
    UpstreamRequest,
    as_count,
    as_object,
    as_text,
)
from localllm.fallback.sse_reader import SSEEvent
from localllm.vocabulary import Finished, TextDelta, TokenLogprob, ToolCall


class OpenAIChatProvider(Provider):
    capabilities = frozenset({"tools", "json_output", "logprobs"})

    def build(self, request: UpstreamRequest, api_key: str | None) -> tuple[str, dict, dict[str, str]]:
        body: dict = {"model": self.settings.model, "messages": request.messages, "stream": True,
                      "stream_options": {"include_usage": True}}
        if request.max_tokens is not None:
            # OpenAI's reasoning models refuse max_tokens; compatible engines (vLLM, llama.cpp)
            # may not know its replacement, max_completion_tokens.
            key = "max_completion_tokens" if self.settings.kind == "openai" else "max_tokens"
            body[key] = request.max_tokens
        for name in ("temperature", "top_p", "seed", "tools", "tool_choice", "parallel_tool_calls",
                     "response_format"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.stop:
            body["stop"] = list(request.stop)
        if request.top_logprobs is not None:
            body["logprobs"] = True
            if request.top_logprobs:
                body["top_logprobs"] = request.top_logprobs
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return f"{self.settings.url}/chat/completions", body, headers

    async def translate(self, events: AsyncIterator[SSEEvent], api_key: str | None) -> AsyncIterator[StreamEvent]:
        finish_reason: str | None = None
        prompt_tokens = completion_tokens = 0
        calls = _CallParts(self)
        async for event in events:
            if event.data.strip() == "[DONE]":
                break
            chunk = self.parse_json(event.data)
            if "error" in chunk:
                raise self._stream_error(chunk["error"], api_key)
            choices = chunk.get("choices") or []
            if not isinstance(choices, list):
                raise self.bad("choices that are not a list")
            for choice in choices:
                if not isinstance(choice, dict):
                    raise self.bad("a choice that is not an object")
                delta = as_object(choice.get("delta"))
                text = as_text(delta.get("content"))
                if text:
                    yield TextDelta(text, _logprobs(as_object(choice.get("logprobs"))))
                whole = calls.add(delta.get("tool_calls"))
                for call in whole:
                    yield call
                if delta.get("tool_calls") and not whole:
                    yield PROGRESS  # arguments still arriving
                if choice.get("finish_reason"):
                    finish_reason = as_text(choice["finish_reason"]) or "stop"
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                prompt_tokens = as_count(usage.get("prompt_tokens"))
                completion_tokens = as_count(usage.get("completion_tokens"))
        if finish_reason is None:
            raise self.bad("the stream ended before a finish_reason")
        for call in calls.rest():
            yield call
        yield Finished(finish_reason, prompt_tokens, completion_tokens)

    def _stream_error(self, error, api_key: str | None) -> UpstreamError:
        message = error.get("message") if isinstance(error, dict) else str(error)
        return UpstreamBadResponse(self.name, f"Upstream {self.name!r} failed mid-answer: "
                                   f"{scrub(str(message), api_key)}")


class _CallParts:
    """Tool calls as OpenAI streams them: by index, the id and name first, then the arguments in pieces.
    A call is whole once a later one begins, or the answer ends. (Servers that send every call at index 0,
    or none, are told apart by the new call's id.)"""

    def __init__(self, provider: Provider):
        self.provider = provider
        self._parts: list[dict] = []  # in the order they began
        self._index_of: dict[int, int] = {}  # the stream's index -> position in _parts
        self._passed = 0  # calls passed on so far

    def add(self, deltas: object) -> list[ToolCall]:
        if not isinstance(deltas, list):
            return []
        for delta in deltas:
            delta = as_object(delta)
            index = delta.get("index", 0)
            if not isinstance(index, int) or isinstance(index, bool):
                raise self.provider.bad("a tool call with an index that is not a number")
            call_id, function = as_text(delta.get("id")), as_object(delta.get("function"))
            position = self._index_of.get(index)
            current = self._parts[position] if position is not None else None
            if current is None or (call_id and current["call_id"] and call_id != current["call_id"]):
                if position is not None and position < self._passed:
                    raise self.provider.bad("a tool call that continues one already finished")
                self._index_of[index] = len(self._parts)
                current = {"call_id": None, "name": "", "arguments": ""}
                self._parts.append(current)
            current["call_id"] = current["call_id"] or call_id
            current["name"] = current["name"] or as_text(function.get("name")) or ""
            current["arguments"] += as_text(function.get("arguments")) or ""
        return self._pass_on(keep_last=True)

    def rest(self) -> list[ToolCall]:
        return self._pass_on(keep_last=False)

    def _pass_on(self, *, keep_last: bool) -> list[ToolCall]:
        """The calls that are whole: all but the last begun (it may still grow), or all at the end."""
        end = len(self._parts) - 1 if keep_last else len(self._parts)
        calls = [self.provider.tool_call(**part) for part in self._parts[self._passed:end]]
        self._passed = max(self._passed, end)
        return calls


def _logprobs(logprobs: dict) -> tuple[TokenLogprob, ...]:
    """OpenAI's choice.logprobs.content as the daemon's TokenLogprob."""
    tokens = []
    for item in logprobs.get("content") or []:
        item = as_object(item)
        token, logprob = as_text(item.get("token")), item.get("logprob")
        if token is None or not isinstance(logprob, (int, float)) or isinstance(logprob, bool):
            continue
        top = tuple((t["token"], float(t["logprob"]), _bytes(t.get("bytes"), t["token"]))
                    for t in (as_object(x) for x in item.get("top_logprobs") or [])
                    if isinstance(t.get("token"), str) and isinstance(t.get("logprob"), (int, float)))
        tokens.append(TokenLogprob(token, float(logprob), _bytes(item.get("bytes"), token), top))
    return tuple(tokens)


def _bytes(value: object, token: str) -> tuple[int, ...]:
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return tuple(value)
    return tuple(token.encode())
