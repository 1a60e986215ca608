"""The request path: decide, then act on the decision.

Validation already happened (a typed request comes in). ``decide`` (the
decision package) scans, checks the cache, scores and plans, and returns a
typed decision; POST /v1/route stops there. ``act`` carries it out: replay a
cached answer, generate locally (judging the answer first when the cascade may
escalate it), or send to an upstream, falling back to what the decision names
if that fails before its first byte. When an answer is complete it is stored in
the cache and the request is logged, both committed before the caller sees the
end of the answer. The HTTP daemon, the CLI's in-process mode and the tests run
this same pipeline, built by ``runtime.open_runtime``.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import uuid
from collections.abc import Awaitable, Callable

import numpy as np

from localllm.daemon.engine.llama_engine import GenerationJob
from localllm.daemon.engine.model_registry import ModelRegistry
from localllm.daemon.engine.scheduler import BatchScheduler
from localllm.daemon.engine.tool_calls import ToolPlan, plan_grammar, template_tools, with_tools_described
from localllm.daemon.pipeline.generation import Generation, HeldEvents, iterate, replay_events, stored_form
from localllm.daemon.pipeline.metrics import DaemonMetrics
from localllm.daemon.pipeline.recording import OnFinished, RequestRecorder
from localllm.daemon.pipeline.upstream_answer import UpstreamAnswered, UpstreamCall, UpstreamFailed, UpstreamSender
from localllm.daemon.requests import ChatCompletionRequest, CompletionRequest
from localllm.decision.cascade import weak_answer_reason
from localllm.decision.decide import Decider, RequestFacts
from localllm.decision.decisions import (
    AnswerLocally,
    CacheCheck,
    Decision,
    PendingFindings,
    ReplayFromCache,
    SendUpstream,
)
from localllm.decision.guard.scan import Finding
from localllm.errors import LocalLLMError
from localllm.fallback.budget import Budget
from localllm.store.cache_keys import CacheKey, scope_sha256
from localllm.store.egress_audit import EgressAudit
from localllm.store.request_log import RequestLog, RequestRecord
from localllm.vocabulary import AnswerText, RequestContext, Sampling

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, registry: ModelRegistry, decider: Decider, *, request_log: RequestLog | None = None,
                 budget: Budget | None = None, audit: EgressAudit | None = None,
                 metrics: DaemonMetrics | None = None):
        self.registry = registry
        self.decider = decider
        self.recorder = RequestRecorder(request_log, metrics)
        self.sender = UpstreamSender(self.recorder, budget=budget, audit=audit)
        self.cascade_counts = {"judged": 0, "fired": 0}

    @property
    def upstreams(self):
        return self.decider.upstreams

    @property
    def planner(self):
        return self.decider.planner

    # -- chat ------------------------------------------------------------------

    async def decide(self, request: ChatCompletionRequest, ctx: RequestContext, *, dry_run: bool = False
                     ) -> Decision:
        """Where ``request`` goes and why; with ``dry_run`` nothing is counted (POST /v1/route), and what
        the local model would refuse when generating (a prompt or max_tokens beyond its context, a
        logit_bias outside its vocabulary) is refused here too."""
        facts = request.facts()
        request.tool_plan()  # tools whose parameters no grammar can enforce are a 400 before anything else
        decision = await self.decider.decide(facts, ctx, dry_run=dry_run)
        if dry_run and isinstance(decision, AnswerLocally):
            scheduler = decision.model
            if scheduler.state != "ready":  # explaining loads nothing: the fit is checked when it answers
                decision.reasons.append(f"local: {scheduler.model_name} is not loaded; it loads for the answer")
                return decision
            lease = await self.registry.acquire(scheduler)
            try:
                prompt_tokens = await scheduler.render_and_tokenize(facts.messages)
                scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens,
                                            shrink=decision.fallback_reason is not None)
                scheduler.engine.check_sampling(request.sampling())
            finally:
                lease.release()
        return decision

    async def chat(self, request: ChatCompletionRequest, ctx: RequestContext | None = None) -> Generation:
        ctx = ctx or RequestContext()
        facts = request.facts()
        request.tool_plan()  # tools whose parameters no grammar can enforce are a 400 before anything else
        decision = await self.decider.decide(facts, ctx)
        return await self.act(decision, request, facts, ctx)

    async def act(self, decision: Decision, request: ChatCompletionRequest, facts: RequestFacts,
                  ctx: RequestContext) -> Generation:
        while True:
            if isinstance(decision, ReplayFromCache):
                return self._replay_decision(decision, request, facts, ctx)
            if isinstance(decision, AnswerLocally):
                return await self._answer_locally(decision, request, facts, ctx)
            outcome = await self._send(decision, request, facts, ctx)
            if isinstance(outcome, UpstreamAnswered):
                return outcome.generation
            decision = await self.decider.fall_back(decision, outcome.reason, facts, ctx)

    def _replay_decision(self, decision: ReplayFromCache, request: ChatCompletionRequest, facts: RequestFacts,
                         ctx: RequestContext) -> Generation:
        record = self._chat_record(decision, request, facts, ctx, decision.model)
        record.upstream = decision.upstream.name if decision.upstream is not None else None
        gen = self._replay(record.request_id, decision.model, decision.cache, record, ctx)
        gen.fallback_reason = decision.fallback_reason
        if decision.upstream is None and request.tools:
            gen.tool_plan = request.tool_plan(self.registry.get(decision.model).engine.tool_format)
        return gen

    async def _answer_locally(self, decision: AnswerLocally, request: ChatCompletionRequest, facts: RequestFacts,
                              ctx: RequestContext) -> Generation:
        """The local model answers, loaded for it if need be and held loaded until the answer ends."""
        return await self._holding(decision.model, ctx, lambda: self._generate_locally(decision, request, facts, ctx))

    async def _holding(self, scheduler: BatchScheduler, ctx: RequestContext,
                       answer: Callable[[], Awaitable[Generation]]) -> Generation:
        """``answer()`` with ``scheduler``'s model loaded for it and held until its events end."""
        lease = await self.registry.acquire(scheduler, ctx.keep_alive_s)
        try:
            gen = await answer()
        except BaseException:
            lease.release()
            raise
        gen.events = HeldEvents(gen.events, lease.release)
        return gen

    async def _generate_locally(self, decision: AnswerLocally, request: ChatCompletionRequest,
                                facts: RequestFacts, ctx: RequestContext) -> Generation:
        scheduler = decision.model
        record = self._chat_record(decision, request, facts, ctx, scheduler.model_name)
        plan = request.tool_plan(scheduler.engine.tool_format)
        prompt_tokens = await self._prompt(scheduler, request, facts, plan)
        sampling = request.sampling()
        grammar = plan_grammar(plan) if plan is not None else None
        if grammar is not None:
            sampling = dataclasses.replace(sampling, grammar=grammar)
        if decision.cascade_to is not None:
            return await self._cascade(decision, prompt_tokens, request, facts, record, ctx)
        gen = self._generate(record.request_id, scheduler, prompt_tokens, sampling, request.max_tokens,
                             record, decision.cache, ctx, shrink=decision.fallback_reason is not None,
                             findings=decision.findings, messages=facts.messages, logprobs=request.logprobs_wanted)
        gen.fallback_reason, gen.tool_plan = decision.fallback_reason, plan
        return gen

    @staticmethod
    async def _prompt(scheduler: BatchScheduler, request: ChatCompletionRequest, facts: RequestFacts,
                      plan: ToolPlan | None) -> list[int]:
        """The prompt's tokens; with tools, shown to the model the way it understands them."""
        if plan is None:
            return await scheduler.render_and_tokenize(facts.messages)
        messages = request.template_messages(plan.format)
        if plan.format == "json":
            return await scheduler.render_and_tokenize(with_tools_described(messages, plan))
        return await scheduler.render_and_tokenize(messages, template_tools(plan))

    async def _send(self, decision: SendUpstream, request: ChatCompletionRequest, facts: RequestFacts,
                    ctx: RequestContext) -> UpstreamAnswered | UpstreamFailed:
        upstream = decision.upstream
        record = self._chat_record(decision, request, facts, ctx, upstream.settings.model)
        record.upstream = upstream.name
        sensitive = self.decider.planner.policy.sensitive(await decision.findings)
        self.recorder.note_sensitive(record, facts.messages, sensitive)
        record.cache = decision.cache.outcome
        # A prompt with sensitive values is never stored in the cache (not even redacted).
        store = _storable(decision.cache, ctx) and not sensitive
        store_answer = self._cache_writer(ctx, decision.cache.key, decision.cache.vector, upstream.settings.model,
                                          lambda: store)
        call = UpstreamCall(max_tokens=request.max_tokens, stream=request.stream, temperature=request.temperature,
                            top_p=request.top_p, stop=request.sampling().stop, seed=request.seed,
                            fields=request.upstream_fields(), extra_prompt_tokens=facts.extra_prompt_tokens)
        outcome = await self.sender.send(decision, facts.messages, request.upstream_messages(), call, record, ctx,
                                         store_answer)
        if isinstance(outcome, UpstreamAnswered):
            gen = outcome.generation
            gen.fallback_reason, gen.cache, gen.route_reason = (decision.fallback_reason, decision.cache.outcome,
                                                                decision.route_reason)
        return outcome

    async def _cascade(self, decision: AnswerLocally, prompt_tokens: list[int], request: ChatCompletionRequest,
                       facts: RequestFacts, record: RequestRecord, ctx: RequestContext) -> Generation:
        """Answer locally in full, judge the answer, and escalate it if weak and allowed."""
        scheduler = decision.model
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens)
        job = GenerationJob(prompt_tokens, max_tokens, request.sampling(), measure_confidence=True)
        try:
            events = [event async for event in scheduler.stream(job)]
        except LocalLLMError as exc:
            self.recorder.finish_soon(record, ctx.started_at, exc.status, type(exc).__name__)
            exc.logged = True
            raise
        answer = AnswerText.of(events)
        weak = weak_answer_reason(answer.text, answer.finished, self.decider.planner.cascade_settings)
        self.cascade_counts["judged"] += 1
        fallback_reason = decision.fallback_reason
        if weak is not None:
            self.cascade_counts["fired"] += 1
            escalated = await self.decider.escalate_weak(decision, weak, facts, ctx)
            if isinstance(escalated, ReplayFromCache):
                return self._replay_decision(escalated, request, facts, ctx)
            if isinstance(escalated, SendUpstream):
                outcome = await self._send(escalated, request, facts, ctx)
                if isinstance(outcome, UpstreamAnswered):
                    return outcome.generation
                fallback_reason = outcome.reason
            else:  # the policy or the budget keeps it here
                fallback_reason = escalated.fallback_reason
            record.fallback_reason = fallback_reason
        record.route, record.cache = "local", decision.cache.outcome
        # A weak answer is not cached: the next time, the upstream may be able to do better.
        store = weak is None and _storable(decision.cache, ctx)
        sensitive = self.decider.planner.policy.sensitive(await decision.findings)
        store_answer = self._cache_writer(ctx, decision.cache.key, decision.cache.vector, scheduler.model_name,
                                          lambda: store and not sensitive)
        self.recorder.note_sensitive(record, facts.messages, sensitive)
        observed = self.recorder.observe(iterate(events), record, ctx.started_at, store_answer)
        return Generation(record.request_id, scheduler.model_name, "local", observed, cache=decision.cache.outcome,
                          fallback_reason=fallback_reason)

    def _chat_record(self, decision: Decision, request: ChatCompletionRequest, facts: RequestFacts,
                     ctx: RequestContext, model: str) -> RequestRecord:
        record = self.recorder.new_record("chat", ctx, model, request.stream, facts.messages)
        record.request_id = f"chatcmpl-{uuid.uuid4().hex}"
        record.fallback_reason, record.route_reason = decision.fallback_reason, decision.route_reason
        record.router_score = decision.score
        return record

    # -- completions -----------------------------------------------------------

    async def complete(self, request: CompletionRequest, ctx: RequestContext | None = None) -> Generation:
        ctx = ctx or RequestContext()
        scheduler = self.registry.get(request.model)
        record = self.recorder.new_record("completions", ctx, scheduler.model_name, request.stream, request.prompt)
        key = CacheKey(scope_sha256({"endpoint": "completions", "model": scheduler.model_name,
                                     "sampling": request.sampling_scope()}), request.prompt)
        gen_id = record.request_id = f"cmpl-{uuid.uuid4().hex}"
        cache = await self.decider.check_cache(key, request.deterministic, ctx)
        if cache.hit is not None:
            return self._replay(gen_id, scheduler.model_name, cache, record, ctx)
        async def answer() -> Generation:
            prompt_tokens = await scheduler.completion_prompt(request.prompt)
            as_messages = [{"role": "user", "content": request.prompt}]
            findings = PendingFindings(lambda: self.decider.scan(as_messages), eager=False)
            return self._generate(gen_id, scheduler, prompt_tokens, request.sampling(), request.max_tokens, record,
                                  cache, ctx, findings=findings, messages=as_messages)

        return await self._holding(scheduler, ctx, answer)

    # -- answers ---------------------------------------------------------------

    def _replay(self, gen_id: str, model: str, cache: CacheCheck, record: RequestRecord,
                ctx: RequestContext) -> Generation:
        record.route, record.cache = "cache", "hit"
        events = self.recorder.observe(replay_events(cache.hit), record, ctx.started_at)
        return Generation(gen_id, model, "cache", events, cache="hit", similarity=cache.hit.similarity)

    def _generate(self, gen_id: str, scheduler: BatchScheduler, prompt_tokens: list[int], sampling: Sampling,
                  max_tokens: int | None, record: RequestRecord, cache: CacheCheck, ctx: RequestContext, *,
                  findings: PendingFindings, messages: list[dict], shrink: bool = False,
                  logprobs: int | None = None) -> Generation:
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), max_tokens, shrink=shrink)
        job = GenerationJob(prompt_tokens, max_tokens, sampling, logprobs=logprobs)
        record.route, record.cache = "local", cache.outcome
        store = _storable(cache, ctx)
        sensitive: list[Finding] = []

        async def scanned() -> None:
            # Only when the outcome depends on it: scanning competes with the engine for the CPU
            # (on 2 cores, a scan beside prompt evaluation added ~13 ms to the first token).
            if store or self.recorder.keeps_prompts:
                sensitive.extend(self.decider.planner.policy.sensitive(await findings))
                self.recorder.note_sensitive(record, messages, sensitive)

        # A prompt with sensitive values is never stored in the cache (known once scanned()).
        store_answer = self._cache_writer(ctx, cache.key, cache.vector, scheduler.model_name,
                                          lambda: store and not sensitive)
        events = self.recorder.observe(scheduler.stream(job), record, ctx.started_at, store_answer,
                                       before_finish=scanned)
        return Generation(gen_id, scheduler.model_name, "local", events, cache=cache.outcome)

    def _cache_writer(self, ctx: RequestContext, key: CacheKey | None, vector: np.ndarray | None, model: str,
                      allowed: Callable[[], bool]) -> OnFinished:
        """The ``on_finished`` hook that stores a complete answer, if ``allowed()`` says so then."""

        def store_answer(answer: AnswerText) -> Awaitable | None:
            if not allowed():
                return None
            event = answer.finished
            usage = {"prompt_tokens": event.prompt_tokens, "completion_tokens": event.completion_tokens}
            text, finish_reason = stored_form(answer)
            return self._store(ctx.namespace, key, vector, model, text, finish_reason, usage)

        return store_answer

    async def _store(self, namespace: str, key: CacheKey, vector: np.ndarray, model: str, text: str,
                     finish_reason: str, usage: dict) -> None:
        try:
            await self.decider.cache.store(namespace, key.scope, key.question, vector, model, text, finish_reason,
                                           usage)
        except sqlite3.Error as exc:  # a full disk, an I/O error: the answer goes on, uncached
            log.warning("semantic cache store failed: %s", exc)
        except Exception:  # a cache write must never fail the answer it would cache
            log.exception("semantic cache store failed")


def _storable(cache: CacheCheck, ctx: RequestContext) -> bool:
    """A fresh answer may be stored: the cache was asked (and missed, or was told not to look) and the
    question's embedding is known, and the client did not say no-store."""
    return cache.outcome in ("miss", "rejected", "bypass") and cache.vector is not None and not ctx.skip_cache_store
