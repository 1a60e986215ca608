"""The one decision step: where a chat request goes, and why.

In order (GUIDE): the guard's scan starts (awaited only where a decision needs
it), the model named is an upstream or a local model, the cache is checked
(exact, then by meaning, with one embedding of the question), the router scores
the question, the planner weighs client preference, policy and upstream health,
and the budget is checked. Nothing is sent and nothing is spent here: acting on
the decision is the pipeline's job, and if an upstream then fails before its
first byte, ``fall_back`` says what answers instead.

POST /v1/route calls the same ``decide`` with ``dry_run``: no cache hit is
counted, the router's traffic calibration is left alone, and the router scores
even when nothing depends on its score.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from localllm.config import CacheSettings
from localllm.decision.decisions import (
    AnswerLocally,
    CacheCheck,
    Decision,
    LocalFallback,
    LocalModel,
    LocalModels,
    PendingFindings,
    ReplayFromCache,
    SendUpstream,
)
from localllm.decision.guard.scan import Finding, RequestScanner
from localllm.decision.planner import RoutePlan, RoutePlanner, blocked_reason
from localllm.fallback.budget import Budget, estimate_prompt_tokens, worst_case_usd
from localllm.fallback.providers import Capability
from localllm.fallback.reliability import ReliableUpstream
from localllm.fallback.upstream_call import upstream_named
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.store.cache_keys import CacheKey, scope_sha256
from localllm.store.semantic_cache import SemanticCache
from localllm.vocabulary import Escalation, RequestContext, stricter

# The fallback reason when the upstream meant to answer cannot carry what the request needs.
UPSTREAM_UNSUPPORTED = "upstream_unsupported"
# ... and when what it would be sent holds a value to redact where redacting is impossible.
REDACTION_INCOMPLETE = "redaction_incomplete"


@dataclass(frozen=True)
class RequestFacts:
    """What deciding needs to know about a chat request (the API layer builds it from the body)."""

    model: str                     # as the client named it: a local model, or an upstream
    messages: list[dict]           # role/content, as the chat template sees them
    deterministic: bool            # temperature 0 or a seed: the same question gets the same answer
    stream: bool = False
    max_tokens: int | None = None
    escalation: Escalation | None = None  # the body's localllm.escalation (the header is in the context)
    cascade_opt_in: bool = False          # the body's localllm.cascade
    # What else must match for a cached answer to fit: sampling settings, tools, response format.
    cache_scope: dict = field(default_factory=dict)
    cacheable: bool = True  # False: a cached answer could not give what the request asks (logprobs)
    # What an upstream must be able to carry to answer it (tools, JSON output, logprobs); one that cannot
    # is not sent it, and the local model answers (fallback reason "upstream_unsupported").
    needs: frozenset[Capability] = frozenset()
    # What an upstream is sent besides the messages (tool definitions, the JSON schema), as JSON text: scanned
    # like a message after the last one. Findings in it cannot be redacted, only allowed: else nothing is sent.
    extra_text: str = ""

    @property
    def extra_prompt_tokens(self) -> int:
        """The tools' and schema's share of an upstream's prompt (the budget's ~2 characters per token)."""
        return len(self.extra_text) // 2

    @property
    def scanned_messages(self) -> list[dict]:
        """What the guard reads: the messages, and the tool definitions and schema as one more."""
        return [*self.messages, {"role": "system", "content": self.extra_text}] if self.extra_text else self.messages


class Decider:
    def __init__(self, models: LocalModels, planner: RoutePlanner, *, upstreams: UpstreamRegistry | None = None,
                 budget: Budget | None = None, scanner: RequestScanner | None = None,
                 cache: SemanticCache | None = None, embedder=None, cache_settings: CacheSettings | None = None,
                 local_failure_upstream: str | None = None, cores_busy: Callable[[], bool] = lambda: False):
        self.models = models
        self.planner = planner
        self.upstreams = upstreams
        self.budget = budget
        self.scanner = scanner
        self.cache = cache
        self.embedder = embedder
        self.cache_settings = cache_settings or CacheSettings()
        self.local_failure_upstream = local_failure_upstream
        self.cores_busy = cores_busy  # a model is generating: helpers keep to one thread

    # -- the decision ---------------------------------------------------------

    async def decide(self, facts: RequestFacts, ctx: RequestContext, *, dry_run: bool = False) -> Decision:
        # With upstreams, the scan starts now, beside the cache lookup; without, only if something awaits it.
        findings = PendingFindings(lambda: self.scan(facts.scanned_messages),
                                   eager=self.upstreams is not None or dry_run)
        escalation = stricter(ctx.escalation, facts.escalation)
        named = upstream_named(self.upstreams, facts.model)
        if named is not None:  # the client named an upstream: still subject to the policy
            fallback = LocalFallback(self.models.default, "never")
            return await self._via_upstream(named, facts, ctx, findings, escalation, fallback, dry_run=dry_run,
                                            route_reason="explicit_model",
                                            reasons=[f"{named.name}: the request names this upstream"])
        model = self.models.get(facts.model)
        unavailable = model.unavailable_reason()
        if unavailable is not None and self.local_failure_upstream is not None and escalation != "never":
            # The local engine cannot take it now; the config allows this upstream instead.
            stand_in = self.upstreams.get(self.local_failure_upstream)
            fallback = LocalFallback(model, escalation, report_reason=False)
            return await self._via_upstream(
                stand_in, facts, ctx, findings, escalation, fallback, dry_run=dry_run,
                egress_reason="local_unavailable", fallback_reason=f"local_{unavailable}",
                reasons=[f"{stand_in.name}: the local model cannot answer now ({unavailable})"])
        return await self._local(model, facts, ctx, findings, escalation, dry_run=dry_run)

    async def fall_back(self, sent: SendUpstream, reason: str, facts: RequestFacts, ctx: RequestContext
                        ) -> Decision:
        """What answers when ``sent`` could not be carried out; ``reason`` is why (http_5xx, budget...)."""
        fallback = sent.if_it_fails
        if fallback.cache is not None:  # an escalation: the local side was decided already
            return AnswerLocally(model=fallback.model, escalation=sent.escalation, findings=sent.findings,
                                 cache=fallback.cache, score=sent.score, threshold=sent.threshold,
                                 reasons=[*sent.reasons, f"local: {sent.upstream.name} could not answer ({reason})"],
                                 fallback_reason=reason, egress=sent.egress)
        return await self._local(fallback.model, facts, ctx, sent.findings, fallback.escalation,
                                 fallback_reason=reason if fallback.report_reason else None)

    async def escalate_weak(self, local: AnswerLocally, weak_reason: str, facts: RequestFacts,
                            ctx: RequestContext) -> Decision:
        """The cascade: a local answer was judged weak (``cascade_*``); where it goes instead."""
        fallback = LocalFallback(local.model, local.escalation, cache=local.cache)
        return await self._via_upstream(local.cascade_to, facts, ctx, local.findings, local.escalation, fallback,
                                        route_reason=weak_reason, vector=local.cache.vector, score=local.score,
                                        threshold=local.threshold,
                                        reasons=[*local.reasons, f"cascade: the local answer was weak ({weak_reason})"])

    async def _local(self, model: LocalModel, facts: RequestFacts, ctx: RequestContext, findings: PendingFindings,
                     escalation: Escalation, *, dry_run: bool = False, fallback_reason: str | None = None
                     ) -> Decision:
        cache = await self.check_cache(self.chat_cache_key(facts, model.model_name), facts.deterministic, ctx,
                                       touch=not dry_run)
        common = dict(escalation=escalation, findings=findings, cache=cache, fallback_reason=fallback_reason)
        if cache.hit is not None:
            return ReplayFromCache(model=model.model_name, **common,
                                   reasons=[f"cache: a cached answer matches (similarity {cache.hit.similarity:.3f})"])
        plan = RoutePlan()
        escalation_upstream = self.planner.escalation_upstream
        # Scored and planned only where the plan can change something (or to explain it), and not
        # when this is already the fallback of another target.
        if fallback_reason is None and (dry_run or (escalation != "never" and escalation_upstream is not None)):
            score, cache.vector = await self.router_score(facts.messages, cache.vector, always=dry_run)
            plan = self.planner.plan(await findings, escalation, score, stream=facts.stream,
                                     cascade_opt_in=facts.cascade_opt_in, observe=not dry_run)
        if facts.needs and plan.cascade is not None:
            plan.cascade = None  # the cascade judges free text: calls and JSON are not judged
            plan.reasons.append(f"local: the cascade does not judge {', '.join(sorted(facts.needs))} answers")
        egress = None
        if dry_run and escalation_upstream is not None:
            egress = (escalation_upstream, self.planner.egress_verdict(await findings, escalation_upstream))
        if plan.escalate is not None:
            return await self._via_upstream(
                plan.escalate, facts, ctx, findings, escalation, LocalFallback(model, escalation, cache=cache),
                dry_run=dry_run, route_reason=plan.route_reason, vector=cache.vector, score=plan.score,
                threshold=plan.threshold, reasons=plan.reasons)
        return AnswerLocally(model=model, cascade_to=plan.cascade, score=plan.score, threshold=plan.threshold,
                             reasons=plan.reasons, egress=egress, **common)

    async def _via_upstream(self, upstream: ReliableUpstream, facts: RequestFacts, ctx: RequestContext,
                            findings: PendingFindings, escalation: Escalation, fallback: LocalFallback, *,
                            dry_run: bool = False, route_reason: str | None = None, egress_reason: str | None = None,
                            fallback_reason: str | None = None, vector: np.ndarray | None = None,
                            score: float | None = None, threshold: float | None = None,
                            reasons: list[str] | None = None) -> Decision:
        """Send to ``upstream`` if the request may go there and the policy and the budget allow; its cached
        answers count too."""
        reasons = list(reasons or [])
        verdict = self.planner.egress_verdict(await findings, upstream)
        common = dict(escalation=escalation, findings=findings, score=score, threshold=threshold,
                      egress=(upstream, verdict))
        missing = sorted(facts.needs - upstream.provider.capabilities)
        if missing:
            reasons.append(f"local: {upstream.name} ({upstream.settings.kind}) cannot carry {', '.join(missing)}")
            return await self._instead(fallback, UPSTREAM_UNSUPPORTED, facts, ctx, findings, common, reasons,
                                       dry_run)
        if verdict.action == "block":
            reasons.append(blocked_reason(verdict, upstream))
            return await self._instead(fallback, verdict.reason, facts, ctx, findings, common, reasons, dry_run)
        if any(f.message_index >= len(facts.messages) for f in verdict.to_redact):
            reasons.append(f"local: the tool definitions or response schema hold values {upstream.name} may not "
                           "see, and they cannot be redacted")
            return await self._instead(fallback, REDACTION_INCOMPLETE, facts, ctx, findings, common, reasons,
                                       dry_run)
        redacting = f"{len(verdict.to_redact)} sensitive value(s) would be redacted before {upstream.name}"
        if verdict.action == "redact" and redacting not in reasons:  # the planner may have said so already
            reasons.append(redacting)
        # Upstream answers cost money: they are cached too, in their own scope.
        key = self.chat_cache_key(facts, f"{upstream.name}/{upstream.settings.model}")
        cache = await self.check_cache(key, facts.deterministic, ctx, vector, touch=not dry_run)
        if cache.hit is not None:
            reasons.append(f"cache: a cached answer of {upstream.name} matches (similarity {cache.hit.similarity:.3f})")
            return ReplayFromCache(model=upstream.settings.model, upstream=upstream, cache=cache, reasons=reasons,
                                   route_reason=route_reason, fallback_reason=fallback_reason, **common)
        over = self.over_budget(upstream, facts)
        if over is not None:
            reasons.append(f"local: {over}")
            return await self._instead(fallback, "budget", facts, ctx, findings, common, reasons, dry_run)
        return SendUpstream(upstream=upstream, verdict=verdict, cache=cache, reasons=reasons,
                            route_reason=route_reason, egress_reason=egress_reason or route_reason,
                            fallback_reason=fallback_reason, if_it_fails=fallback, **common)

    async def _instead(self, fallback: LocalFallback, reason: str, facts: RequestFacts, ctx: RequestContext,
                       findings: PendingFindings, common: dict, reasons: list[str], dry_run: bool) -> Decision:
        """The upstream may not be used (policy, budget): the fallback answers."""
        if fallback.cache is not None:
            return AnswerLocally(model=fallback.model, cache=fallback.cache, reasons=reasons, fallback_reason=reason,
                                 **common)
        decision = await self._local(fallback.model, facts, ctx, findings, fallback.escalation, dry_run=dry_run,
                                     fallback_reason=reason if fallback.report_reason else None)
        decision.reasons[:0] = reasons
        if decision.egress is None:
            decision.egress = common["egress"]
        return decision

    # -- the parts it asks ----------------------------------------------------

    async def scan(self, messages: list[dict]) -> list[Finding]:
        return await self.scanner.scan(messages) if self.scanner is not None else []

    @staticmethod
    def chat_cache_key(facts: RequestFacts, model: str) -> CacheKey | None:
        messages = facts.messages
        if not facts.cacheable or messages[-1]["role"] != "user":
            return None  # e.g. an assistant prefill: not a question to match
        scope = {"endpoint": "chat", "model": model, "earlier_turns": messages[:-1], **facts.cache_scope}
        return CacheKey(scope_sha256(scope), messages[-1]["content"])

    def cacheable(self, deterministic: bool) -> bool:
        return deterministic or self.cache_settings.allow_nondeterministic

    async def check_cache(self, key: CacheKey | None, deterministic: bool, ctx: RequestContext,
                          vector: np.ndarray | None = None, *, touch: bool = True) -> CacheCheck:
        """Exact match first, then by meaning. ``touch``: count a hit (off when only explaining)."""
        if self.cache is None:
            return CacheCheck(vector=vector)
        if key is None or not self.cacheable(deterministic) or (ctx.skip_cache_lookup and ctx.skip_cache_store):
            return CacheCheck("bypass", key, vector)
        if not ctx.skip_cache_lookup:
            hit = await self.cache.lookup_exact(ctx.namespace, key.scope, key.question, touch=touch)
            if hit is not None:
                return CacheCheck("hit", key, vector, hit)
        if vector is None:  # once: for the semantic lookup, the router and storing
            vector = await self.embed(key.question)
        if ctx.skip_cache_lookup:
            return CacheCheck("bypass", key, vector)
        found = await self.cache.lookup_similar(ctx.namespace, key.scope, key.question, vector, touch=touch)
        if found.hit is not None:
            return CacheCheck("hit", key, vector, found.hit)
        return CacheCheck("rejected" if found.rejected else "miss", key, vector)

    async def embed(self, text: str) -> np.ndarray:
        embed = functools.partial(self.embedder.embed, [text], cores_busy=self.cores_busy())
        vectors = await asyncio.get_running_loop().run_in_executor(None, embed)
        return vectors[0]

    async def router_score(self, messages: list[dict], vector: np.ndarray | None, *, always: bool = False
                           ) -> tuple[float | None, np.ndarray | None]:
        """The complexity score of the last user turn, reusing the cache's embedding of it."""
        if not (always or self.planner.scores_requests) or self.planner.complexity_router is None \
                or self.embedder is None:
            return None, vector
        question = last_user_text(messages)
        if vector is None:
            vector = await self.embed(question)
        return await self.planner.score(question, vector), vector

    def over_budget(self, upstream: ReliableUpstream, facts: RequestFacts) -> str | None:
        """Why the worst case of this request would break a spend cap, or None. Holds nothing."""
        if self.budget is None:
            return None
        max_tokens = facts.max_tokens or self.budget.settings.default_max_tokens
        prompt_tokens = estimate_prompt_tokens(facts.messages) + facts.extra_prompt_tokens
        amount = worst_case_usd(upstream.settings, prompt_tokens, max_tokens)
        return self.budget.refusal(upstream.name, amount)


def last_user_text(messages: list[dict]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
