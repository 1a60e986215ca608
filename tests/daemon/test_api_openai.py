"""The OpenAI-compatible API, driven by the official openai SDK against the real
daemon app on 127.0.0.1 with the real default model."""

from __future__ import annotations

import openai
import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import TEST_N_CTX, make_settings


@pytest.fixture
def make_client(make_client):
    """These tests are about generation itself: run them with the semantic cache off."""

    async def start(settings=None, **kwargs):
        return await make_client(settings or make_settings(cache={"enabled": False}), **kwargs)

    return start


def sdk(client, api_key="unused") -> openai.AsyncOpenAI:
    base = str(client.make_url("/v1"))
    return openai.AsyncOpenAI(base_url=base, api_key=api_key, max_retries=0, timeout=60)


QUESTION = [{"role": "user", "content": "Name three colours."}]


async def test_chat_completion_with_sdk(make_client):
    client = sdk(await make_client())
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=8)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == DEFAULT_MODEL
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    assert completion.usage.prompt_tokens > 5
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8


async def test_stream_matches_non_stream_and_reports_usage(make_client):
    client = sdk(await make_client())
    whole = await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=12)
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=12, stream=True,
        stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 6, "tokens must arrive one by one, not as one blob"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


async def test_stop_sequence_and_finish_reason_stop(make_client):
    client = sdk(await make_client())
    free = await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=20)
    text = free.choices[0].message.content
    words = text.split()
    assert len(words) >= 3
    stop = " " + words[2]
    cut = text.find(stop)
    stopped = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=20, stop=[stop])
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[:cut]


async def test_seed_makes_sampling_repeatable_and_unseeded_varies(make_client):
    client = sdk(await make_client())
    ask = dict(model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Write a word."}],
               temperature=1.5, max_tokens=16)
    first = await client.chat.completions.create(seed=7, **ask)
    second = await client.chat.completions.create(seed=7, **ask)
    assert first.choices[0].message.content == second.choices[0].message.content
    unseeded = {(await client.chat.completions.create(**ask)).choices[0].message.content for _ in range(3)}
    assert len(unseeded) > 1


async def test_text_completion_endpoint(make_client):
    client = sdk(await make_client())
    completion = await client.completions.create(model=DEFAULT_MODEL, prompt="The sky is", temperature=0, max_tokens=5)
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage.completion_tokens == 5
    stream = await client.completions.create(model=DEFAULT_MODEL, prompt="The sky is", temperature=0, max_tokens=5,
                                             stream=True)
    text = "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])
    assert text == completion.choices[0].text


async def test_models_list(make_client):
    client = sdk(await make_client())
    models = await client.models.list()
    assert [m.id for m in models.data] == [DEFAULT_MODEL, "all-MiniLM-L6-v2"]  # the chat model, the embedder


async def test_model_aliases_resolve_to_the_served_model(make_client, default_model_file):
    client = sdk(await make_client())
    answer = await client.chat.completions.create(model=default_model_file.name, messages=QUESTION, max_tokens=2)
    assert answer.model == DEFAULT_MODEL


async def test_unknown_model_is_404(make_client):
    client = sdk(await make_client())
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert info.value.body["code"] == "model_not_found"
    assert "gpt-4o" in info.value.body["message"]


@pytest.mark.parametrize("change, param", [
    ({"temperature": 5}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"n": 2}, None),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
    ({"n": 2}, "n"),
])
async def test_invalid_parameters_are_400_naming_the_field(make_client, change, param):
    client = sdk(await make_client())
    body = {"model": DEFAULT_MODEL, "messages": QUESTION, **change}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(**body)
    error = info.value.body
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param
        assert param.split("[")[0] in error["message"]


async def test_prompt_longer_than_context_is_400_with_counts(make_client):
    client = sdk(await make_client())
    long_prompt = "apple " * (TEST_N_CTX * 2)
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=[{"role": "user", "content": long_prompt}])
    body = info.value.body
    assert body["code"] == "context_length_exceeded"
    assert str(TEST_N_CTX) in body["message"]
    tokens_said = [int(word) for word in body["message"].split() if word.isdigit()]
    assert max(tokens_said) > TEST_N_CTX


async def test_max_tokens_beyond_context_is_400(make_client):
    client = sdk(await make_client())
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, max_tokens=TEST_N_CTX)
    assert info.value.body["param"] == "max_tokens"


async def test_token_required_when_configured(make_client):
    server = await make_client(api_token="s3cret-token")
    with pytest.raises(openai.AuthenticationError):
        await sdk(server, api_key="wrong").models.list()
    models = await sdk(server, api_key="s3cret-token").models.list()
    assert models.data[0].id == DEFAULT_MODEL
    health = await server.get("/health")  # probes need no token
    assert health.status == 200


async def test_greedy_answers_do_not_depend_on_what_ran_before(make_client):
    client = sdk(await make_client())
    ask = dict(model=DEFAULT_MODEL, temperature=0, max_tokens=24)
    first = await client.chat.completions.create(messages=QUESTION, **ask)
    await client.chat.completions.create(messages=[{"role": "user", "content": "Something else entirely."}], **ask)
    second = await client.chat.completions.create(messages=QUESTION, **ask)
    third = await client.chat.completions.create(messages=QUESTION, **ask)
    assert first.choices[0].message.content == second.choices[0].message.content == third.choices[0].message.content


async def test_concurrent_streams_each_get_their_own_answer(make_client, shared_registry):
    """Four clients streaming at once through the daemon: batched together, and each answer is
    the one that request gets alone (nothing leaks between sequences)."""
    import asyncio

    server = await make_client()
    client = sdk(server)
    questions = ["Name three colours.", "What is the capital of Italy?", "Say something about cats.",
                 "Count from one to five."]

    async def streamed(question: str) -> str:
        stream = await client.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": question}], temperature=0,
            max_tokens=40, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

    alone = [await streamed(question) for question in questions]
    assert shared_registry.default.engine.settings.n_parallel >= 4
    reused_before = (await (await server.get("/health")).json())["models"][0]["reused_prompt_tokens"]
    together = await asyncio.gather(*(streamed(question) for question in questions))
    assert together == alone
    assert len(set(alone)) == len(questions)
    model = (await (await server.get("/health")).json())["models"][0]
    assert model["running"] == 0 and model["waiting"] == 0
    assert model["parallel"] == shared_registry.default.engine.settings.n_parallel
    assert model["reused_prompt_tokens"] > reused_before  # the chat template's shared head was copied


async def test_logit_bias_is_validated_and_applied(make_client, shared_registry):
    client = sdk(await make_client())
    for bad in ({"cat": 5}, {"10000000": 5}, {"5": 300}):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, logit_bias=bad)
        assert info.value.body["param"] == "logit_bias"
    plain = (await client.chat.completions.create(model=DEFAULT_MODEL, messages=QUESTION, temperature=0,
                                                  max_tokens=12)).choices[0].message.content
    # Ban the greedy answer's first token: the answer must start differently.
    model = shared_registry.default.engine.model
    first = model.tokenize(plain.encode(), add_bos=False, special=False)[0]
    biased = (await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=QUESTION, temperature=0, max_tokens=12,
        logit_bias={str(first): -100})).choices[0].message.content
    assert not biased.startswith(model.detokenize([first]).decode())
