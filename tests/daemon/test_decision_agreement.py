"""POST /v1/route and chat run one decision step: for the same request they agree on where it goes,
why, and what sensitive data it holds. Real daemon app, model, guard, embedder and cache; the fake
cloud speaks OpenAI's wire format."""

from __future__ import annotations

import json

from localllm.config import DEFAULT_MODEL, PolicySettings
from localllm.store.database import open_database
from tests.daemon.test_route_decisions import FAKE_OPENAI_KEY, SENSITIVE, with_updates
from tests.daemon.test_upstream_route import settings_with

CLOUD_POLICY = PolicySettings().cloud


async def route_then_chat(app_client, body: dict) -> tuple[dict, dict]:
    """The explanation of ``body``, then the real answer's headers (the answer read to its end)."""
    explained = await app_client.post("/v1/route", json=body)
    assert explained.status == 200, await explained.text()
    plan = await explained.json()
    answered = await app_client.post("/v1/chat/completions", json=body)
    assert answered.status == 200, await answered.text()
    await answered.read()
    return plan, dict(answered.headers)


def assert_agree(plan: dict, headers: dict) -> None:
    assert plan["target"]["route"] == headers["X-LocalLLM-Route"]
    assert plan["route_reason"] == headers.get("X-LocalLLM-Route-Reason")
    assert plan["fallback_reason"] == headers.get("X-LocalLLM-Fallback-Reason")
    assert plan["cache"]["outcome"] == headers.get("X-LocalLLM-Cache", "off")
    if plan["cache"]["similarity"] is not None:
        assert plan["cache"]["similarity"] == float(headers["X-LocalLLM-Cache-Similarity"])


def assert_same_findings(plan: dict, *, logged: bool) -> None:
    """The request log counts the findings that may not reach a cloud in the clear; explain lists them."""
    row = next(open_database().query("SELECT sensitive FROM requests ORDER BY id DESC LIMIT 1"))
    sensitive = [f for f in plan["sensitive"]["findings"] if getattr(CLOUD_POLICY, f["class"]) != "allow"]
    if logged:
        assert row["sensitive"] is not None
    if row["sensitive"] is not None:
        assert row["sensitive"] == len(sensitive)


def ask(content: str, model: str = DEFAULT_MODEL, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "temperature": 0,
            "max_tokens": 6, **extra}


async def test_route_and_chat_agree_on_route_reason_and_findings(make_client, fake_cloud, upstream_key):
    settings = with_updates(settings_with(fake_cloud), cache={"enabled": True})
    app_client = await make_client(settings)

    # Local: nothing cached yet, no upstream asked for.
    plan, headers = await route_then_chat(app_client, ask("Name a colour."))
    assert (plan["target"]["route"], plan["cache"]["outcome"]) == ("local", "miss")
    assert_agree(plan, headers)
    assert_same_findings(plan, logged=True)

    # The same question again: an exact cache hit.
    plan, headers = await route_then_chat(app_client, ask("Name a colour."))
    assert (plan["target"]["route"], plan["cache"]["similarity"]) == ("cache", 1.0)
    assert_agree(plan, headers)

    # A paraphrase the verifier accepts: a semantic hit.
    await route_then_chat(app_client, ask("How do I learn Python?"))
    plan, headers = await route_then_chat(app_client, ask("How can I learn Python?"))
    assert plan["target"]["route"] == "cache" and 0.8 < plan["cache"]["similarity"] < 1.0
    assert_agree(plan, headers)

    # A named upstream.
    plan, headers = await route_then_chat(app_client, ask("Capital of France?", model="cloudy"))
    assert (plan["target"]["route"], plan["route_reason"]) == ("cloud", "explicit_model")
    assert_agree(plan, headers)
    assert_same_findings(plan, logged=True)

    # Sensitive values, redacted before they leave: the audit records what explain said would be redacted.
    plan, headers = await route_then_chat(app_client, ask(SENSITIVE, model="cloudy"))
    assert plan["sensitive"]["egress"]["action"] == "redact"
    assert_agree(plan, headers)
    assert_same_findings(plan, logged=True)
    audit = next(open_database().query("SELECT redacted FROM egress_audit ORDER BY id DESC LIMIT 1"))
    assert json.loads(audit["redacted"]) == plan["sensitive"]["egress"]["redacted"]
    assert {"CREDIT_CARD", "EMAIL_ADDRESS", "PERSON"} <= set(plan["sensitive"]["egress"]["redacted"])

    # A secret: blocked, answered locally, and nothing more leaves.
    sent_before = len(fake_cloud.received)
    plan, headers = await route_then_chat(app_client, ask(f"Why does OPENAI_API_KEY={FAKE_OPENAI_KEY} fail?",
                                                          model="cloudy"))
    assert (plan["target"]["route"], plan["fallback_reason"]) == ("local", "policy_block:secret")
    assert_agree(plan, headers)
    assert_same_findings(plan, logged=True)
    assert len(fake_cloud.received) == sent_before


async def test_route_and_chat_agree_when_the_router_escalates_and_when_the_budget_says_no(
        make_client, fake_cloud, upstream_key):
    settings = with_updates(settings_with(fake_cloud), router={"escalate_to": "cloudy", "threshold": 0.0})
    app_client = await make_client(settings)
    plan, headers = await route_then_chat(app_client, ask("Prove that there are infinitely many primes."))
    assert (plan["target"]["route"], plan["route_reason"]) == ("cloud", "router")
    assert_agree(plan, headers)

    broke = with_updates(settings, budget={"daily_usd": 0.0})
    app_client = await make_client(broke)
    plan, headers = await route_then_chat(app_client, ask("Prove that there are infinitely many primes."))
    assert (plan["target"]["route"], plan["fallback_reason"]) == ("local", "budget")
    assert_agree(plan, headers)


async def test_route_and_chat_agree_on_tools_json_and_logprobs(make_client, fake_cloud, upstream_key):
    """An upstream that can carry them gets them (named, or by the router); one that cannot leaves the
    request to the local model, and both endpoints say why."""
    settings = with_updates(settings_with(fake_cloud), router={"escalate_to": "cloudy", "threshold": 0.0})
    app_client = await make_client(settings)
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    cases = (({"tools": [tool], "max_tokens": 40}, "cloudy"),
             ({"response_format": {"type": "json_object"}, "max_tokens": 40}, DEFAULT_MODEL),
             ({"logprobs": True}, DEFAULT_MODEL))
    for extra, model in cases:
        plan, headers = await route_then_chat(app_client, ask("Prove that there are infinitely many primes.",
                                                              model=model, **extra))
        assert (plan["target"]["route"], plan["fallback_reason"]) == ("cloud", None), extra
        assert_agree(plan, headers)
    assert len(fake_cloud.received) == 3

    anthropic = settings.model_copy(update={"upstreams": [
        settings.upstreams[0].model_copy(update={"kind": "anthropic", "base_url": fake_cloud.root})]})
    app_client = await make_client(anthropic)
    plan, headers = await route_then_chat(app_client, ask("Prove that there are infinitely many primes.",
                                                          model="cloudy", logprobs=True))
    assert (plan["target"]["route"], plan["fallback_reason"]) == ("local", "upstream_unsupported")
    assert_agree(plan, headers)
    assert len(fake_cloud.received) == 3