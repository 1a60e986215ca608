"""The semantic cache as clients see it: headers, scope, namespaces, streaming replay,
Cache-Control, persistence; plus /v1/embeddings. Real model, real SQLite, openai SDK."""

from __future__ import annotations

import asyncio

import numpy as np
import openai
import pytest

from localllm.config import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.daemon.test_api_openai import sdk

GREEDY = {"model": DEFAULT_MODEL, "temperature": 0, "max_tokens": 12}


def ask(text: str, system: str | None = None) -> list[dict]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


async def chat(client, text, *, headers=None, system=None, **overrides):
    raw = await client.chat.completions.with_raw_response.create(
        messages=ask(text, system), extra_headers=headers or {}, **{**GREEDY, **overrides})
    return raw.headers, raw.parse()


async def test_repeat_is_a_hit_with_the_same_answer(make_client):
    client = sdk(await make_client())
    first_headers, first = await chat(client, "What is the boiling point of water?")
    assert first_headers["X-LocalLLM-Cache"] == "miss"
    assert first_headers["X-LocalLLM-Route"] == "local"
    again_headers, again = await chat(client, "what is the boiling point of water")
    assert again_headers["X-LocalLLM-Cache"] == "hit"
    assert again_headers["X-LocalLLM-Route"] == "cache"
    assert float(again_headers["X-LocalLLM-Cache-Similarity"]) == pytest.approx(1.0)
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.completion_tokens == first.usage.completion_tokens


async def test_paraphrase_hits_but_a_different_number_or_an_opposite_does_not(make_client):
    client = sdk(await make_client())
    await chat(client, "What is the best way to learn guitar?")
    headers, _ = await chat(client, "What is the best way to learn the guitar?")
    assert headers["X-LocalLLM-Cache"] == "hit"
    assert 0.5 < float(headers["X-LocalLLM-Cache-Similarity"]) < 1.0
    await chat(client, "What is 12 times 7?")
    headers, _ = await chat(client, "What is 12 times 8?")
    assert headers["X-LocalLLM-Cache"] == "rejected"  # close, but the verifier saw the number
    await chat(client, "Is backward time travel possible?")
    headers, _ = await chat(client, "Is backward time travel impossible?")
    assert headers["X-LocalLLM-Cache"] == "rejected"  # WordNet's opposites (store/assets/antonyms.tsv)


async def test_a_paraphrase_in_other_words_hits(make_client):
    """Few shared words: the verifier's cross-encoder reads both questions together."""
    client = sdk(await make_client())
    _, first = await chat(client, "How do I get rid of acne?")
    headers, again = await chat(client, "How can I get rid of pimples?")
    assert headers["X-LocalLLM-Cache"] == "hit"
    assert again.choices[0].message.content == first.choices[0].message.content


@pytest.mark.parametrize(("share", "outcome"), [(None, "rejected"), (0.15, "hit")])
async def test_the_operating_point_setting_trades_recall_for_safety(make_client, share, outcome):
    """`cache.max_wrong_hit_share`: a looser paraphrase is refused at the default (8%), served at 15%."""
    settings = make_settings(cache={} if share is None else {"max_wrong_hit_share": share})
    client = sdk(await make_client(settings))
    await chat(client, "How can I lose weight quickly?")
    headers, _ = await chat(client, "What is the fastest way to lose weight?")
    assert headers["X-LocalLLM-Cache"] == outcome


@pytest.mark.parametrize("change", [
    {"system": "Answer like a pirate."},
    {"temperature": 0.0, "max_tokens": 13},
    {"seed": 5},
    {"stop": ["\n"]},
    {"top_p": 0.5},
])
async def test_scope_must_match_exactly(make_client, change):
    client = sdk(await make_client())
    await chat(client, "Name a large mammal.")
    system = change.pop("system", None)
    headers, _ = await chat(client, "Name a large mammal.", system=system, **change)
    assert headers["X-LocalLLM-Cache"] == "miss"


async def test_earlier_turns_are_part_of_the_scope(make_client):
    client = sdk(await make_client())
    history = [{"role": "user", "content": "I live in Oslo."}, {"role": "assistant", "content": "Nice."}]
    other = [{"role": "user", "content": "I live in Rome."}, {"role": "assistant", "content": "Nice."}]
    question = {"role": "user", "content": "What is the weather like here?"}
    await client.chat.completions.create(messages=history + [question], **GREEDY)
    raw = await client.chat.completions.with_raw_response.create(messages=other + [question], **GREEDY)
    assert raw.headers["X-LocalLLM-Cache"] == "miss"
    raw = await client.chat.completions.with_raw_response.create(messages=history + [question], **GREEDY)
    assert raw.headers["X-LocalLLM-Cache"] == "hit"


async def test_nondeterministic_requests_bypass_unless_allowed(make_client):
    client = sdk(await make_client())
    for _ in range(2):
        headers, _ = await chat(client, "Tell me a fact.", temperature=0.9)
        assert headers["X-LocalLLM-Cache"] == "bypass"
    allowed = sdk(await make_client(make_settings(cache={"allow_nondeterministic": True})))
    await chat(allowed, "Tell me a fact.", temperature=0.9)
    headers, _ = await chat(allowed, "Tell me a fact.", temperature=0.9)
    assert headers["X-LocalLLM-Cache"] == "hit"


async def test_namespaces_never_share_entries(make_client):
    client = sdk(await make_client())
    await chat(client, "What colour is the sky?", headers={"X-LocalLLM-Namespace": "team-a"})
    headers, _ = await chat(client, "What colour is the sky?", headers={"X-LocalLLM-Namespace": "team-b"})
    assert headers["X-LocalLLM-Cache"] == "miss"
    headers, _ = await chat(client, "What colour is the sky?")
    assert headers["X-LocalLLM-Cache"] == "miss"
    headers, _ = await chat(client, "What colour is the sky?", headers={"X-LocalLLM-Namespace": "team-a"})
    assert headers["X-LocalLLM-Cache"] == "hit"


async def test_bad_namespace_is_400(make_client):
    client = sdk(await make_client())
    with pytest.raises(openai.BadRequestError):
        await chat(client, "hi", headers={"X-LocalLLM-Namespace": "../etc"})


async def test_cache_control_no_cache_and_no_store(make_client):
    client = sdk(await make_client())
    headers, _ = await chat(client, "Name a river.", headers={"Cache-Control": "no-store"})
    assert headers["X-LocalLLM-Cache"] == "miss"
    headers, _ = await chat(client, "Name a river.")
    assert headers["X-LocalLLM-Cache"] == "miss", "no-store must not have stored it"
    headers, _ = await chat(client, "Name a river.", headers={"Cache-Control": "no-cache"})
    assert headers["X-LocalLLM-Cache"] == "bypass"
    headers, _ = await chat(client, "Name a river.")
    assert headers["X-LocalLLM-Cache"] == "hit"


async def test_streamed_answer_is_stored_and_a_hit_is_replayed_as_a_stream(make_client):
    client = sdk(await make_client())
    first = await client.chat.completions.create(messages=ask("Describe a cat."), stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY)
    first_chunks = [c async for c in first]
    first_text = "".join(c.choices[0].delta.content or "" for c in first_chunks if c.choices)
    raw = await client.chat.completions.with_raw_response.create(
        messages=ask("Describe a cat."), stream=True, stream_options={"include_usage": True}, **GREEDY)
    assert raw.headers["X-LocalLLM-Cache"] == "hit"
    chunks = [c async for c in raw.parse()]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first_text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1, "replayed as a stream"
    assert chunks[-1].usage.completion_tokens == first_chunks[-1].usage.completion_tokens


async def test_aborted_stream_is_never_stored(make_client):
    server = await make_client()
    body = {"messages": ask("Write a long essay about rivers."), "stream": True, **GREEDY, "max_tokens": 200}
    response = await server.post("/v1/chat/completions", json=body)
    await response.content.readline()
    response.close()
    await asyncio.sleep(0.5)
    client = sdk(server)
    headers, _ = await chat(client, "Write a long essay about rivers.", max_tokens=200)
    assert headers["X-LocalLLM-Cache"] == "miss"


async def test_entries_survive_a_restart(make_client, open_test_services):
    client = sdk(await make_client())
    _, first = await chat(client, "Which planet is largest?")
    # A new app with freshly opened services rebuilds the index from the same database file.
    restarted = sdk(await make_client(services=await open_test_services()))
    headers, again = await chat(restarted, "Which planet is largest?")
    assert headers["X-LocalLLM-Cache"] == "hit"
    assert again.choices[0].message.content == first.choices[0].message.content


async def test_ttl_expires_entries(make_client):
    client = sdk(await make_client(make_settings(cache={"ttl_s": 0.5})))
    await chat(client, "Name a mountain.")
    await asyncio.sleep(0.7)
    headers, _ = await chat(client, "Name a mountain.")
    assert headers["X-LocalLLM-Cache"] == "miss"


async def test_least_recently_used_entries_are_evicted(make_client):
    client = sdk(await make_client(make_settings(cache={"max_entries": 2})))
    await chat(client, "Name a fruit.", max_tokens=2)
    await chat(client, "Name a vegetable.", max_tokens=2)
    await chat(client, "Name a fruit.", max_tokens=2)  # a hit: fruit is now the most recently used
    await chat(client, "Name a colour.", max_tokens=2)  # over the limit: vegetable goes
    assert (await chat(client, "Name a fruit.", max_tokens=2))[0]["X-LocalLLM-Cache"] == "hit"
    # Gone: not an exact hit. ("rejected" when fruit or colour is close enough for the verifier to refuse.)
    assert (await chat(client, "Name a vegetable.", max_tokens=2))[0]["X-LocalLLM-Cache"] in {"miss", "rejected"}


async def test_clear_endpoint_empties_only_the_callers_namespace(make_client):
    server = await make_client()
    client = sdk(server)
    await chat(client, "Name a bird.", headers={"X-LocalLLM-Namespace": "a"})
    await chat(client, "Name a bird.", headers={"X-LocalLLM-Namespace": "b"})
    response = await server.delete("/v1/localllm/cache", headers={"X-LocalLLM-Namespace": "a"})
    assert response.status == 200 and (await response.json())["removed"] == 1
    assert (await chat(client, "Name a bird.", headers={"X-LocalLLM-Namespace": "a"}))[0]["X-LocalLLM-Cache"] == "miss"
    assert (await chat(client, "Name a bird.", headers={"X-LocalLLM-Namespace": "b"}))[0]["X-LocalLLM-Cache"] == "hit"


async def test_concurrent_identical_requests_all_answer(make_client):
    client = sdk(await make_client())
    results = await asyncio.gather(*(chat(client, "Name a metal.") for _ in range(6)))
    texts = {r[1].choices[0].message.content for r in results}
    assert len(texts) == 1
    headers, _ = await chat(client, "Name a metal.")
    assert headers["X-LocalLLM-Cache"] == "hit"


async def test_requests_are_logged_with_cache_outcome(make_client):
    from localllm.store.database import open_database

    client = sdk(await make_client())
    await chat(client, "Name an ocean.")
    await chat(client, "Name an ocean.")
    rows = list(open_database().query("SELECT route, cache, status, prompt_text FROM requests ORDER BY id"))
    assert [(r["route"], r["cache"], r["status"]) for r in rows] == [("local", "miss", 200), ("cache", "hit", 200)]
    assert all(r["prompt_text"] is None for r in rows)


async def test_embeddings_endpoint_with_sdk(make_client, shared_embedder):
    client = sdk(await make_client())
    single = await client.embeddings.create(model="all-MiniLM-L6-v2", input="hello world")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384
    assert single.usage.prompt_tokens > 0
    many = await client.embeddings.create(model="all-MiniLM-L6-v2", input=["cats", "dogs", "tax law"],
                                          encoding_format="float")
    vectors = np.array([d.embedding for d in many.data])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    expected = shared_embedder.embed(["hello world"])[0]
    assert np.allclose(single.data[0].embedding, expected, atol=1e-5)
    with pytest.raises(openai.NotFoundError):
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError):
        await client.embeddings.create(model="all-MiniLM-L6-v2", input=[])


class RecordingEmbedder:
    """The real embedder, noting whether each call was told llama.cpp had the cores."""

    def __init__(self, inner):
        self.inner, self.name, self.dimensions = inner, inner.name, inner.dimensions
        self.calls: list[tuple[list[str], bool]] = []

    def embed(self, texts, *, cores_busy=False):
        self.calls.append((list(texts), cores_busy))
        return self.inner.embed(texts, cores_busy=cores_busy)

    def count_tokens(self, texts):
        return self.inner.count_tokens(texts)


async def test_embedding_keeps_to_one_thread_while_a_model_generates(make_client, open_test_services):
    services = await open_test_services()
    recorder = services.embedder = RecordingEmbedder(services.embedder)
    client = sdk(await make_client(services=services))
    stream = await client.chat.completions.create(
        messages=ask("Write a long story about a lighthouse keeper."), stream=True,
        **{**GREEDY, "max_tokens": 200, "logit_bias": {"2": -100}})
    chunks = aiter(stream)
    await anext(chunks)  # generating now
    await chat(client, "Name a river in Africa.")
    await client.embeddings.create(model="all-MiniLM-L6-v2", input="during the story")
    async for _ in chunks:
        pass
    await client.embeddings.create(model="all-MiniLM-L6-v2", input="after the story")
    flags = {texts[0]: busy for texts, busy in recorder.calls}
    assert flags["Write a long story about a lighthouse keeper."] is False  # nothing was generating yet
    assert flags["Name a river in Africa."] is True
    assert flags["during the story"] is True
    assert flags["after the story"] is False


async def test_prompts_and_answers_never_reach_the_logs(make_client, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    client = sdk(await make_client())
    sentinel = "zebra-sentinel-4711"
    _, answer = await chat(client, f"Spell the word {sentinel}.")
    await chat(client, f"Spell the word {sentinel}.")
    stream = await client.chat.completions.create(messages=ask(f"Again {sentinel}"), stream=True, **GREEDY)
    async for _ in stream:
        pass
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert sentinel not in logged
    content = answer.choices[0].message.content.strip()
    assert len(content) < 8 or content not in logged


async def test_namespace_tokens_bind_their_callers_to_one_namespace(make_client):
    server = await make_client(api_token="main-token", namespace_tokens={"team-a": "token-a", "team-b": "token-b"})
    team_a, team_b = sdk(server, api_key="token-a"), sdk(server, api_key="token-b")
    await chat(team_a, "Name a planet.")
    assert (await chat(team_a, "Name a planet."))[0]["X-LocalLLM-Cache"] == "hit"
    assert (await chat(team_b, "Name a planet."))[0]["X-LocalLLM-Cache"] == "miss"
    # The main token may pick a namespace by header; a namespace token may not leave its own.
    main = sdk(server, api_key="main-token")
    assert (await chat(main, "Name a planet.", headers={"X-LocalLLM-Namespace": "team-a"}))[0][
        "X-LocalLLM-Cache"] == "hit"
    with pytest.raises(openai.AuthenticationError):
        await chat(team_b, "Name a planet.", headers={"X-LocalLLM-Namespace": "team-a"})
    with pytest.raises(openai.AuthenticationError):
        await chat(sdk(server, api_key="token-c"), "Name a planet.")
