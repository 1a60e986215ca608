"""Where requests go: redaction on the way out and back, blocks that keep a request
local, router escalation, the cascade, client preferences, and the egress audit.
Real daemon app on 127.0.0.1, real model and guard, fake cloud speaking OpenAI's
wire format, the openai SDK as client."""

from __future__ import annotations

import hashlib
import json
import re

import openai
import pytest

from localllm.config import DEFAULT_MODEL, Settings
from localllm.store.database import open_database
from tests.conftest import make_settings
from tests.daemon.test_api_openai import sdk
from tests.daemon.test_upstream_route import settings_with

PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]")
FAKE_OPENAI_KEY = "sk-proj-" + "Zq3vT8kLmN2pR7sW4xY9bC1dF6gH0jK5" * 2
SENSITIVE = ("Please write to alice.smith@example.com and tell John Smith that the card 4111 1111 1111 1111 "
             "was charged twice.")


def echo_placeholders(body: dict) -> str:
    """The fake cloud's answer: every placeholder it was sent, so the daemon has something to restore."""
    question = body["messages"][-1]["content"]
    return "Done: " + " / ".join(PLACEHOLDER.findall(question)) + "."


def with_updates(settings: Settings, **sections) -> Settings:
    data = settings.model_dump()
    for section, values in sections.items():
        data[section] = {**(data.get(section) or {}), **values}
    return Settings.model_validate(data)


def sent_text(fake) -> str:
    return json.dumps(fake.received[-1].body["messages"])


async def test_redacted_on_the_way_out_restored_on_the_way_back(make_client, fake_cloud, upstream_key):
    fake_cloud.answer_from = echo_placeholders
    settings = with_updates(settings_with(fake_cloud), cache={"enabled": True})
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": SENSITIVE}], max_tokens=50, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
    out = sent_text(fake_cloud)
    for value in ("alice.smith@example.com", "John Smith", "4111 1111 1111 1111"):
        assert value not in out
    assert {"[EMAIL_ADDRESS_1]", "[PERSON_1]", "[CREDIT_CARD_1]"} <= set(PLACEHOLDER.findall(out))
    answer = raw.parse().choices[0].message.content
    assert "alice.smith@example.com" in answer and "John Smith" in answer and "4111 1111 1111 1111" in answer
    assert not PLACEHOLDER.search(answer)

    db = open_database()
    audit = list(db.query("SELECT * FROM egress_audit"))
    assert len(audit) == 1
    row = audit[0]
    assert (row["upstream"], row["trust"], row["action"], row["reason"]) == ("cloudy", "cloud", "redact",
                                                                              "explicit_model")
    assert json.loads(row["redacted"]) == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1, "PERSON": 1}
    received = fake_cloud.received[-1].body["messages"]
    expected_hash = hashlib.sha256(json.dumps([{"role": m["role"], "content": m["content"]} for m in received],
                                              sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert row["content_sha256"] == expected_hash
    request_row = next(db.query("SELECT * FROM requests ORDER BY id DESC LIMIT 1"))
    assert request_row["request_id"] == row["request_id"] and request_row["sensitive"] >= 3
    # A prompt flagged sensitive is never stored in the cache.
    assert db["cache_entries"].count == 0
    dump = "\n".join(str(r) for table in ("requests", "egress_audit") for r in db.query(f"SELECT * FROM {table}"))
    assert "alice.smith@example.com" not in dump and "4111 1111 1111 1111" not in dump


async def test_streamed_answer_with_placeholders_split_across_chunks_is_restored(make_client, fake_cloud,
                                                                                 upstream_key):
    fake_cloud.answer_from = echo_placeholders
    fake_cloud.chunk_chars = 3  # "[EM", "AIL", "_AD" ...: every placeholder is cut
    client = sdk(await make_client(settings_with(fake_cloud)))
    stream = await client.chat.completions.create(
        model="cloudy", messages=[{"role": "user", "content": SENSITIVE}], max_tokens=200, stream=True)
    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert text.startswith("Done: ")
    assert "alice.smith@example.com" in text and "John Smith" in text and "4111 1111 1111 1111" in text
    assert not PLACEHOLDER.search(text)


async def test_a_secret_keeps_the_request_on_the_device(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": f"Why does OPENAI_API_KEY={FAKE_OPENAI_KEY} fail?"}],
        max_tokens=8, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "policy_block:secret"
    assert fake_cloud.received == []
    assert open_database()["egress_audit"].count == 0


async def test_onprem_may_receive_names_but_never_card_numbers(make_client, fake_cloud, upstream_key):
    fake_cloud.answer_from = echo_placeholders
    client = sdk(await make_client(settings_with(fake_cloud, trust="onprem")))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": SENSITIVE}], max_tokens=50)
    assert raw.headers["X-LocalLLM-Route"] == "onprem"
    out = sent_text(fake_cloud)
    assert "John Smith" in out and "alice.smith@example.com" in out
    assert "4111 1111 1111 1111" not in out and "[CREDIT_CARD_1]" in out


async def test_with_the_guard_off_nothing_goes_to_the_cloud(make_client, fake_cloud, upstream_key):
    settings = with_updates(settings_with(fake_cloud), guard={"enabled": False})
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=4)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "policy_block:unscanned"
    assert fake_cloud.received == []


async def test_requests_cannot_loosen_the_policy(make_client, fake_cloud, upstream_key):
    client = sdk(await make_client(settings_with(fake_cloud)))
    secret = [{"role": "user", "content": f"key: {FAKE_OPENAI_KEY}"}]
    for loosen in ({"policy": {"cloud": {"secret": "allow"}}}, {"redact": False}, {"guard": "off"}):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="cloudy", messages=secret, max_tokens=4,
                                                 extra_body={"localllm": loosen})
        assert refused.value.body["param"] == "localllm" and "[policy]" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="cloudy", messages=secret, max_tokens=4,
                                             extra_headers={"X-LocalLLM-Escalation": "always-please"})
    # Asking to escalate is allowed, but cannot move blocked content.
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=secret, max_tokens=4, extra_body={"localllm": {"escalation": "prefer"}})
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert fake_cloud.received == []


def routed(fake, **router) -> Settings:
    return with_updates(settings_with(fake), router={"escalate_to": "cloudy", **router})


async def test_router_escalates_above_its_threshold_and_stays_local_below(make_client, fake_cloud, upstream_key):
    question = [{"role": "user", "content": "Prove that there are infinitely many primes."}]
    client = sdk(await make_client(routed(fake_cloud, threshold=0.0)))
    raw = await client.chat.completions.with_raw_response.create(model=DEFAULT_MODEL, messages=question,
                                                                 max_tokens=20)
    assert (raw.headers["X-LocalLLM-Route"], raw.headers["X-LocalLLM-Route-Reason"]) == ("cloud", "router")
    row = next(open_database().query("SELECT * FROM requests ORDER BY id DESC LIMIT 1"))
    assert row["route_reason"] == "router" and 0 <= row["router_score"] <= 1
    audit = next(open_database().query("SELECT * FROM egress_audit"))
    assert (audit["reason"], audit["action"]) == ("router", "allow")

    settings = with_updates(routed(fake_cloud, threshold=1.0), cascade={"enabled": False})
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(model=DEFAULT_MODEL, messages=question,
                                                                 max_tokens=5)
    assert raw.headers["X-LocalLLM-Route"] == "local" and "X-LocalLLM-Route-Reason" not in raw.headers
    assert len(fake_cloud.received) == 1


async def test_client_can_ask_to_stay_local_or_to_escalate(make_client, fake_cloud, upstream_key):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    client = sdk(await make_client(routed(fake_cloud, threshold=0.0)))
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=5, extra_headers={"X-LocalLLM-Escalation": "never"})
    assert raw.headers["X-LocalLLM-Route"] == "local"
    # Header and body field combine to the stricter one.
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=5, extra_headers={"X-LocalLLM-Escalation": "prefer"},
        extra_body={"localllm": {"escalation": "never"}})
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert fake_cloud.received == []
    settings = with_updates(routed(fake_cloud, threshold=1.0), cascade={"enabled": False})
    client = sdk(await make_client(settings))
    raw = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=5, extra_body={"localllm": {"escalation": "prefer"}})
    assert (raw.headers["X-LocalLLM-Route"], raw.headers["X-LocalLLM-Route-Reason"]) == ("cloud", "client_prefer")


async def test_cascade_escalates_a_weak_local_answer_and_counts_how_often(make_client, fake_cloud, upstream_key):
    question = [{"role": "user", "content": "Explain the Riemann hypothesis in one sentence."}]
    # Every real answer has a mean log-probability below 0: the cascade always fires.
    always = with_updates(routed(fake_cloud, threshold=1.0), cascade={"min_mean_logprob": 0.0,
                                                                      "truncated_is_weak": False})
    app_client = await make_client(always)
    client = sdk(app_client)
    raw = await client.chat.completions.with_raw_response.create(model=DEFAULT_MODEL, messages=question,
                                                                 max_tokens=12, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "cloud"
    assert raw.headers["X-LocalLLM-Route-Reason"] == "cascade_low_logprob"
    assert raw.parse().choices[0].message.content == fake_cloud.text
    # Streaming requests are not cascaded unless the client opts in...
    stream = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=12, temperature=0, stream=True)
    assert stream.headers["X-LocalLLM-Route"] == "local"
    [chunk async for chunk in stream.parse()]
    # ... and then nothing is sent before the local answer is judged.
    stream = await client.chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=12, temperature=0, stream=True,
        extra_body={"localllm": {"cascade": True}})
    assert stream.headers["X-LocalLLM-Route"] == "cloud"
    text = "".join([c.choices[0].delta.content or "" async for c in stream.parse() if c.choices])
    assert text == fake_cloud.text
    health = await (await app_client.get("/health")).json()
    assert health.get("cascade") == {"judged": 2, "fired": 2}, health

    never = with_updates(routed(fake_cloud, threshold=1.0), cascade={
        "min_mean_logprob": -100.0, "max_mean_entropy": 100.0, "truncated_is_weak": False,
        "refusal_is_weak": False})
    app_client = await make_client(never)
    raw = await sdk(app_client).chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=question, max_tokens=12, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert (await (await app_client.get("/health")).json())["cascade"] == {"judged": 1, "fired": 0}
    assert len(fake_cloud.received) == 2


async def test_cascade_with_an_upstream_down_keeps_the_local_answer(make_client, fake_cloud, upstream_key):
    from tests.fallback.fake_upstream import Fault

    fake_cloud.fail_always(Fault("http_500"))
    settings = with_updates(routed(fake_cloud, threshold=1.0), cascade={"min_mean_logprob": 0.0})
    raw = await sdk(await make_client(settings)).chat.completions.with_raw_response.create(
        model=DEFAULT_MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, temperature=0)
    assert raw.headers["X-LocalLLM-Route"] == "local"
    assert raw.headers["X-LocalLLM-Fallback-Reason"] == "http_5xx"
    assert raw.parse().choices[0].message.content


async def test_explain_shows_findings_score_cache_and_target_without_values(make_client, fake_cloud,
                                                                            upstream_key):
    settings = with_updates(routed(fake_cloud, escalate_share=0.2), cache={"enabled": True})
    app_client = await make_client(settings)
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": SENSITIVE}], "temperature": 0}
    response = await app_client.post("/v1/route", json=body)
    assert response.status == 200
    text = await response.text()
    for value in ("alice.smith@example.com", "John Smith", "4111"):
        assert value not in text
    plan = json.loads(text)
    types = {f["type"] for f in plan["sensitive"]["findings"]}
    assert {"EMAIL_ADDRESS", "PERSON", "CREDIT_CARD"} <= types
    email = next(f for f in plan["sensitive"]["findings"] if f["type"] == "EMAIL_ADDRESS")
    assert SENSITIVE[email["start"]:email["end"]] == "alice.smith@example.com"
    assert plan["sensitive"]["egress"]["action"] == "redact"
    assert 0 <= plan["router"]["score"] <= 1 and 0 <= plan["router"]["threshold"] <= 1
    assert plan["cache"]["outcome"] == "miss"
    assert plan["target"]["route"] in ("local", "cloud") and plan["reasons"]
    # Nothing was sent, generated or logged.
    assert fake_cloud.received == [] and open_database()["requests"].count == 0

    secret = {**body, "messages": [{"role": "user", "content": f"token={FAKE_OPENAI_KEY}"}]}
    plan = await (await app_client.post("/v1/route", json=secret)).json()
    assert plan["target"]["route"] == "local"
    assert plan["sensitive"]["egress"]["blocked_classes"] == ["secret"]

    # Once an answer is cached, explain says it would be a cache hit, and does not count it as one.
    plain = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "Name a colour."}],
             "temperature": 0, "max_tokens": 5}
    await sdk(app_client).chat.completions.create(**plain, extra_headers={"X-LocalLLM-Escalation": "never"})
    plan = await (await app_client.post("/v1/route", json=plain)).json()
    assert plan["target"]["route"] == "cache" and plan["cache"]["outcome"] == "hit"
    assert next(open_database().query("SELECT hits FROM cache_entries"))["hits"] == 0


async def test_explain_scores_even_without_an_upstream_and_rejects_bad_bodies(make_client):
    app_client = await make_client(make_settings(cache={"enabled": False}))
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "What is 17 * 23?"}]}
    plan = await (await app_client.post("/v1/route", json=body)).json()
    assert plan["target"]["route"] == "local" and 0 <= plan["router"]["score"] <= 1
    assert "escalate_to is not set" in " ".join(plan["reasons"])
    bad = await app_client.post("/v1/route", json={"model": DEFAULT_MODEL})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "messages"


async def test_explain_score_is_the_routers_score_of_the_last_user_turn(make_client, shared_embedder):
    from localllm.decision.router.complexity_router import ComplexityRouter

    app_client = await make_client(make_settings(cache={"enabled": False}))
    question = "A train leaves at 3 pm going 60 mph; another at 4 pm going 80 mph. When does the second catch up?"
    body = {"model": DEFAULT_MODEL, "messages": [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": question}]}
    plan = await (await app_client.post("/v1/route", json=body)).json()
    expected = ComplexityRouter.load().score(question, shared_embedder.embed([question])[0])
    assert plan["router"]["score"] == pytest.approx(expected, abs=1e-4)


async def test_custom_terms_and_patterns_from_the_config_are_redacted(make_client, fake_cloud, upstream_key):
    fake_cloud.answer_from = echo_placeholders
    settings = with_updates(settings_with(fake_cloud), guard={"custom_terms": {"ACME_CUSTOMERS": ["Contoso"]},
                                                              "custom_patterns": {"PART_NUMBER": r"PN-\d{6}"}})
    raw = await sdk(await make_client(settings)).chat.completions.with_raw_response.create(
        model="cloudy", messages=[{"role": "user", "content": "Does contoso still order PN-123456?"}], max_tokens=30)
    sent = fake_cloud.received[-1].body["messages"][-1]["content"]
    assert sent == "Does [CUSTOM_ACME_CUSTOMERS_1] still order [CUSTOM_PART_NUMBER_1]?"
    assert raw.parse().choices[0].message.content == "Done: contoso / PN-123456."
