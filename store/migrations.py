"""Every schema change, numbered and named, applied in order inside a transaction.

Never edit a migration that has shipped: add the next one. Tests apply the set
from empty and from each earlier version (``Migrations.apply(stop_before=...)``).
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

MIGRATIONS = Migrations("localllm")


@MIGRATIONS(name="0001_request_log")
def request_log(db: Database) -> None:
    db["requests"].create({
        "id": int,
        "created_at": str,        # ISO 8601, UTC
        "request_id": str,        # the id in the response (chatcmpl-...), to match client and log
        "namespace": str,
        "endpoint": str,          # chat | completions | embeddings | ...
        "model": str,
        "route": str,             # local | cache | onprem | cloud
        "cache": str,             # hit | miss | bypass | None when the cache did not apply
        "stream": int,
        "prompt_tokens": int,
        "completion_tokens": int,
        "ttft_ms": float,
        "latency_ms": float,
        "status": int,            # HTTP status; 499 = client went away
        "error_class": str,
        "prompt_sha256": str,
        "prompt_text": str,       # only when store.log_prompts is on
        "answer_text": str,       # only when store.log_prompts is on
    }, pk="id", not_null={"created_at", "status"})
    db["requests"].create_index(["created_at"])
    db["requests"].create_index(["request_id"])


@MIGRATIONS(name="0002_semantic_cache")
def semantic_cache(db: Database) -> None:
    db["cache_entries"].create({
        "id": int,
        "namespace": str,
        "scope_sha256": str,      # everything that must match exactly (model, system, turns, sampling ...)
        "text_sha256": str,       # normalised last user turn, for the exact fast path
        "question": str,          # the last user turn, for the verifier
        "embedding": bytes,       # float32 little-endian
        "answer": str,            # JSON: text, finish_reason, usage
        "model": str,
        "created_at": float,      # unix seconds
        "last_used_at": float,
        "hits": int,
    }, pk="id", not_null={"namespace", "scope_sha256", "text_sha256", "embedding", "answer"}, defaults={"hits": 0})
    db["cache_entries"].create_index(["namespace", "scope_sha256", "text_sha256"])
    db["cache_entries"].create_index(["last_used_at"])


@MIGRATIONS(name="0003_request_upstream_cost")
def request_upstream_cost(db: Database) -> None:
    db["requests"].add_column("upstream", str)        # which [[upstreams]] entry served it, if any
    db["requests"].add_column("cost_usd", float)      # at the upstream's configured prices
    db["requests"].add_column("fallback_reason", str)  # why an upstream request was answered locally


@MIGRATIONS(name="0004_egress_audit_and_route_reason")
def egress_audit_and_route_reason(db: Database) -> None:
    db["egress_audit"].create({
        "id": int,
        "created_at": str,        # ISO 8601, UTC; written before the request leaves the device
        "request_id": str,        # matches requests.request_id
        "namespace": str,
        "upstream": str,          # [[upstreams]] name
        "trust": str,             # onprem | cloud
        "model": str,
        "action": str,            # allow (nothing to redact) | redact
        "redacted": str,          # JSON {"PERSON": 2, "EMAIL_ADDRESS": 1}: types and counts, never values
        "redacted_count": int,
        "content_sha256": str,    # hash of exactly what was sent (after redaction)
        "reason": str,            # why it left: router | cascade_* | explicit_model | local_unavailable | client
    }, pk="id", not_null={"created_at", "upstream", "action", "content_sha256"})
    db["egress_audit"].create_index(["created_at"])
    db["requests"].add_column("route_reason", str)   # why it was escalated (router, cascade_low_confidence ...)
    db["requests"].add_column("router_score", float)
    db["requests"].add_column("sensitive", int)      # findings in the prompt (count); such prompts are not cached


@MIGRATIONS(name="0005_request_energy")
def request_energy(db: Database) -> None:
    db["requests"].add_column("energy_joules", float)  # local answers: their share of each decode step
    db["requests"].add_column("energy_source", str)    # rapl (measured) | estimated (CPU time x watts/core)
