"""OpenAI wire shapes for answers: whole responses and streamed chunks."""

from __future__ import annotations

from localllm.daemon.pipeline.generation import Generation
from localllm.vocabulary import Finished


def usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens, "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


def chat_completion(gen: Generation, text: str, finished: Finished) -> dict:
    return {
        "id": gen.id, "object": "chat.completion", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": finished.finish_reason}],
        "usage": usage(finished),
    }


def chat_chunk(gen: Generation, delta: dict, finish_reason: str | None = None, *, with_usage: bool = False) -> dict:
    chunk = {
        "id": gen.id, "object": "chat.completion.chunk", "created": gen.created, "model": gen.model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
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
