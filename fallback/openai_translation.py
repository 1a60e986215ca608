"""The OpenAI chat-completions wire format, for OpenAI itself and every compatible engine.

Usage comes in a last chunk with empty ``choices`` when ``stream_options.include_usage``
is honoured; servers that ignore it (older engines) report no usage, and the
counts stay 0 rather than being guessed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from localllm.fallback.errors import UpstreamBadResponse, UpstreamError, scrub
from localllm.fallback.providers import Provider, StreamEvent, UpstreamRequest, as_count, as_object, as_text
from localllm.fallback.sse_reader import SSEEvent
from localllm.vocabulary import Finished, TextDelta


class OpenAIChatProvider(Provider):
    def build(self, request: UpstreamRequest, api_key: str | None) -> tuple[str, dict, dict[str, str]]:
        body: dict = {"model": self.settings.model, "messages": request.messages, "stream": True,
                      "stream_options": {"include_usage": True}}
        if request.max_tokens is not None:
            # OpenAI's reasoning models refuse max_tokens; compatible engines (vLLM, llama.cpp)
            # may not know its replacement, max_completion_tokens.
            key = "max_completion_tokens" if self.settings.kind == "openai" else "max_tokens"
            body[key] = request.max_tokens
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        if request.stop:
            body["stop"] = list(request.stop)
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return f"{self.settings.url}/chat/completions", body, headers

    async def translate(self, events: AsyncIterator[SSEEvent], api_key: str | None) -> AsyncIterator[StreamEvent]:
        finish_reason: str | None = None
        prompt_tokens = completion_tokens = 0
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
                text = as_text(as_object(choice.get("delta")).get("content"))
                if text:
                    yield TextDelta(text)
                if choice.get("finish_reason"):
                    finish_reason = as_text(choice["finish_reason"]) or "stop"
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                prompt_tokens = as_count(usage.get("prompt_tokens"))
                completion_tokens = as_count(usage.get("completion_tokens"))
        if finish_reason is None:
            raise self.bad("the stream ended before a finish_reason")
        yield Finished(finish_reason, prompt_tokens, completion_tokens)

    def _stream_error(self, error, api_key: str | None) -> UpstreamError:
        message = error.get("message") if isinstance(error, dict) else str(error)
        return UpstreamBadResponse(self.name, f"Upstream {self.name!r} failed mid-answer: "
                                   f"{scrub(str(message), api_key)}")
