"""OpenAI wire shapes for answers: whole responses and streamed chunks."""

from __future__ import annotations

from localllm.daemon.engine.tool_calls import CallHold, parse_calls
from localllm.daemon.pipeline.generation import Generation
from localllm.vocabulary import AnswerText, Finished, ToolCall


def usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def logprobs_content(tokens) -> dict:
    """OpenAI's choice.logprobs for these tokens."""
    return {"content": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes),
                         "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(raw)}
                                          for token, logprob, raw in t.top]} for t in tokens],
            "refusal": None}


def chat_completion(gen: Generation, answer: AnswerText, logprobs=None) -> dict:
    text, finished = answer.text, answer.finished
    calls = answer.calls or (parse_calls(text, gen.tool_plan) if gen.tool_plan is not None else None)
    if calls:
        # An upstream may say something before its calls; the local model's calls are the whole answer.
        message = {"role": "assistant", "content": text if answer.calls and text else None,
                   "tool_calls": [tool_call(call) for call in calls]}
        finish_reason = "tool_calls"
    else:
        message, finish_reason = {"role": "assistant", "content": text}, finished.finish_reason
    return {
        "id": gen.id, "object": "chat.completion", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message,
                     "logprobs": logprobs_content(logprobs) if logprobs is not None else None,
                     "finish_reason": finish_reason}],
        "usage": usage(finished),
    }


def tool_call(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class ChatChunks:
    """An answer's events as OpenAI chat chunks. With tools, text that may be a call is held back until it
    can be told apart from a plain answer (``CallHold``); a call is then sent as OpenAI streams one (id and
    name, then the arguments), which the SDKs put back together."""

    def __init__(self, gen: Generation, *, with_usage: bool, logprobs: bool = False):
        self.gen, self.with_usage, self.logprobs = gen, with_usage, logprobs
        self._hold = CallHold(gen.tool_plan)
        self._calls = 0  # tool calls sent so far

    def start(self) -> list[dict]:
        return [chat_chunk(self.gen, {"role": "assistant", "content": ""}, with_usage=self.with_usage)]

    def text(self, text: str, logprobs=()) -> list[dict]:
        text, tokens = self._hold.feed(text, logprobs)
        return [self._content(text, tokens)] if text else []

    def tool_call(self, call: ToolCall) -> list[dict]:
        """An upstream's call, as OpenAI streams one: id and name first, then the arguments."""
        self._calls += 1
        return self._call_chunks(self._calls - 1, call)

    def finished(self, finished: Finished) -> list[dict]:
        calls, text, tokens = self._hold.finish()
        chunks = [self._content(text, tokens)] if text else []
        for call in calls or []:
            chunks.extend(self._call_chunks(self._calls, call))
            self._calls += 1
        reason = "tool_calls" if self._calls else finished.finish_reason
        chunks.append(chat_chunk(self.gen, {}, reason, with_usage=self.with_usage))
        if self.with_usage:
            chunks.append(chat_usage_chunk(self.gen, finished))
        return chunks

    def _call_chunks(self, index: int, call: ToolCall) -> list[dict]:
        opening = {"index": index, "id": call.id, "type": "function",
                   "function": {"name": call.name, "arguments": ""}}
        return [chat_chunk(self.gen, {"tool_calls": [opening]}, with_usage=self.with_usage),
                chat_chunk(self.gen, {"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]},
                           with_usage=self.with_usage)]

    def _content(self, text: str, logprobs=()) -> dict:
        return chat_chunk(self.gen, {"content": text}, with_usage=self.with_usage,
                          logprobs=list(logprobs) if self.logprobs else None)
def chat_chunk(gen: Generation, delta: dict, finish_reason: str | None = None, *, with_usage: bool = False,
               logprobs=None) -> dict:
    chunk = {
        "id": gen.id, "object": "chat.completion.chunk", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta,
                     "logprobs": logprobs_content(logprobs) if logprobs is not None else None,
                     "finish_reason": finish_reason}],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def chat_usage_chunk(gen: Generation, finished: Finished) -> dict:
    return {"id": gen.id, "object": "chat.completion.chunk", "created": gen.created, "model": gen.model,
            "system_fingerprint": None, "choices": [], "usage": usage(finished)}


def text_completion(gen: Generation, text: str, finished: Finished) -> dict:
    return {
        "id": gen.id, "object": "text_completion", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finished.finish_reason}],
        "usage": usage(finished),
    }


def completion_chunk(gen: Generation, text: str, finish_reason: str | None = None) -> dict:
    return {
        "id": gen.id, "object": "text_completion", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def completion_usage_chunk(gen: Generation, finished: Finished) -> dict:
    return {"id": gen.id, "object": "text_completion", "created": gen.created, "model": gen.model,
            "system_fingerprint": None, "choices": [], "usage": usage(finished)}
