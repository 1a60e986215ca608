"""POST /v1/route: where a chat request would go, and why, without generating.

Runs the same steps as a real request (guard, cache, router, policy, health)
but sends nothing, spends nothing, and leaves the cache's hit counts and the
router's traffic calibration alone. Findings are reported as types and spans,
never values.
"""

from __future__ import annotations

from aiohttp import web

from localllm.fallback.budget import estimate_prompt_tokens, worst_case_usd
from localllm.fallback.guard.scan import count_types

from .api_openai import read_json
from .app_keys import PIPELINE
from .openai_requests import ChatCompletionRequest, parse_request
from .pipeline import Pipeline
from .request_context import RequestContext, context_from_headers
from .route_decision import blocked_reason, stricter
from .security import TOKEN_NAMESPACE
from .upstream_route import upstream_named


async def explain_route(pipeline: Pipeline, request: ChatCompletionRequest, ctx: RequestContext) -> dict:
    messages = request.template_messages()
    findings = await pipeline.scan(messages)
    escalation = stricter(ctx.escalation, request.localllm.escalation if request.localllm else None)
    planner = pipeline.planner
    out: dict = {"object": "localllm.route", "escalation": escalation,
                 "sensitive": {"guard": "on" if pipeline.scanner is not None else "off",
                               "findings": [f.describe() for f in findings]},
                 "router": None, "cache": None, "reasons": [], "route_reason": None}
    explicit = upstream_named(pipeline.upstreams, request.model)
    if explicit is not None:
        verdict = planner.egress_verdict(findings, explicit)
        out["sensitive"]["egress"] = _egress(explicit, verdict)
        if verdict.action == "block":
            out["reasons"].append(blocked_reason(verdict, explicit))
            out["target"] = _local(pipeline.registry.default.model_name)
        else:
            out["reasons"].append(f"{explicit.name}: the request names this upstream")
            out["target"] = _upstream(explicit)
            out["route_reason"] = "explicit_model"
        return out

    scheduler = pipeline.registry.get(request.model)
    key = pipeline._chat_cache_key(request, scheduler.model_name, messages)
    hit, outcome, vector = await pipeline._consult_cache(key, request, ctx, touch=False)
    out["cache"] = {"outcome": outcome or "off", "similarity": round(hit.similarity, 4) if hit else None}
    score, vector = await pipeline.router_score(messages, vector, always=True)
    plan = planner.plan(findings, escalation, score, stream=request.stream,
                        cascade_opt_in=bool(request.localllm and request.localllm.cascade), observe=False)
    threshold = plan.threshold
    if score is not None and threshold is None and planner.threshold is not None:
        threshold = planner.threshold.current()
    out["router"] = {"score": None if score is None else round(score, 4),
                     "threshold": None if threshold is None else round(threshold, 4),
                     "escalate_share": planner.router_settings.escalate_share
                     if planner.router_settings.threshold is None else None,
                     "escalate_to": planner.router_settings.escalate_to}
    if planner.escalation_upstream is not None:
        out["sensitive"]["egress"] = _egress(planner.escalation_upstream,
                                             planner.egress_verdict(findings, planner.escalation_upstream))
    if hit is not None:
        out["reasons"].append(f"cache: a cached answer matches (similarity {hit.similarity:.3f})")
        out["target"] = {"route": "cache", "upstream": None, "model": scheduler.model_name}
        return out
    out["reasons"].extend(plan.reasons)
    if plan.escalate is not None:
        over = _over_budget(pipeline, plan.escalate, messages, request)
        if over:
            out["reasons"].append(f"local: {over}")
        else:
            out["target"], out["route_reason"] = _upstream(plan.escalate), plan.route_reason
            return out
    out["target"] = _local(scheduler.model_name)
    out["cascade"] = plan.cascade.name if plan.cascade is not None else None
    return out


def _over_budget(pipeline: Pipeline, upstream, messages, request) -> str | None:
    if pipeline.budget is None:
        return None
    max_tokens = request.max_tokens or pipeline.budget.settings.default_max_tokens
    amount = worst_case_usd(upstream.settings, estimate_prompt_tokens(messages), max_tokens)
    return pipeline.budget.refusal(upstream.name, amount)


def _egress(upstream, verdict) -> dict:
    return {"upstream": upstream.name, "trust": upstream.settings.trust, "action": verdict.action,
            "redacted": count_types(verdict.to_redact), "blocked_classes": list(verdict.blocked_classes)}


def _local(model: str) -> dict:
    return {"route": "local", "upstream": None, "model": model}


def _upstream(upstream) -> dict:
    return {"route": upstream.settings.trust, "upstream": upstream.name, "model": upstream.settings.model}


async def explain(request: web.Request) -> web.Response:
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    body = parse_request(ChatCompletionRequest, await read_json(request))
    return web.json_response(await explain_route(request.app[PIPELINE], body, ctx))


def add_route_routes(app: web.Application) -> None:
    app.router.add_post("/v1/route", explain)
