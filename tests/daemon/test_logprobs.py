"""logprobs and top_logprobs on chat completions: each generated token with its log-probability and the
most likely alternatives, whole and streamed, computed from the real model's logits."""

from __future__ import annotations

import math

import openai
import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.daemon.test_api_openai import sdk

ASK = [{"role": "user", "content": "Name three colours."}]


async def test_greedy_tokens_come_with_their_logprobs_and_the_best_alternatives(make_client):
    client = sdk(await make_client(make_settings(cache={"enabled": True})))
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=ASK, temperature=0, max_tokens=12, logprobs=True, top_logprobs=3)
    assert raw.headers["X-LocalLLM-Cache"] == "bypass"  # a cached answer would have no logprobs to give
    choice = raw.parse().choices[0]
    tokens = choice.logprobs.content
    assert len(tokens) == raw.parse().usage.completion_tokens
    assert "".join(t.token for t in tokens) == choice.message.content
    for token in tokens:
        assert token.logprob <= 0 and bytes(token.bytes).decode("utf-8", "replace") == token.token
        assert len(token.top_logprobs) == 3
        logprobs = [alternative.logprob for alternative in token.top_logprobs]
        assert logprobs == sorted(logprobs, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert token.top_logprobs[0].token == token.token
        assert math.isclose(token.top_logprobs[0].logprob, token.logprob, abs_tol=1e-5)
    assert sum(math.exp(a.logprob) for a in tokens[0].top_logprobs) <= 1.0 + 1e-6


async def test_streamed_chunks_carry_the_logprobs_of_their_own_text(make_client):
    client = sdk(await make_client(make_settings(cache={"enabled": False})))
    whole = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, temperature=0, max_tokens=12,
                                                 logprobs=True)
    stream = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, temperature=0, max_tokens=12,
                                                  logprobs=True, stream=True)
    streamed = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            assert "".join(t.token for t in chunk.choices[0].logprobs.content) == chunk.choices[0].delta.content
            streamed.extend(chunk.choices[0].logprobs.content)
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [
        (t.token, round(t.logprob, 4)) for t in whole.choices[0].logprobs.content]
    assert all(t.top_logprobs == [] for t in streamed)


async def test_without_logprobs_there_are_none_and_top_logprobs_alone_is_a_400(make_client):
    client = sdk(await make_client())
    plain = await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, temperature=0, max_tokens=4)
    assert plain.choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=4, top_logprobs=2)
    assert refused.value.body["param"] == "top_logprobs"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=ASK, max_tokens=4, logprobs=True,
                                             top_logprobs=21)
