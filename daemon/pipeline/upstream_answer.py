"""Carrying out a SendUpstream decision: redact, reserve, audit, send, relay, restore, settle.

Until the upstream's first event arrives nothing has reached the client, so a
failure up to then is reported as ``UpstreamFailed`` and the pipeline falls
back to what the decision names. A non-streaming answer is read whole first, so
it can fall back from a failure anywhere in it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from localllm.daemon.pipeline.generation import Generation
from localllm.daemon.pipeline.recording import OnFinished, RequestRecorder
from localllm.decision.decisions import SendUpstream
from localllm.decision.guard.scan import count_types
from localllm.decision.guard.structured_redaction import RedactionIncomplete, redact_structured
from localllm.decision.guard.vault import RedactionVault, restore_placeholders
from localllm.fallback.budget import Budget, Reservation, estimate_prompt_tokens, worst_case_usd
from localllm.fallback.errors import UpstreamError
from localllm.fallback.providers import UpstreamRequest
from localllm.fallback.upstream_call import OpenedUpstream, buffer_answer, cost_usd, open_upstream
from localllm.store.egress_audit import EgressAudit, EgressRecord, content_sha256
from localllm.store.request_log import RequestRecord
from localllm.vocabulary import AnswerEvent, AnswerText, RequestContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamAnswered:
    generation: Generation


@dataclass(frozen=True)
class UpstreamFailed:
    reason: str  # http_5xx, timeout, connect, no_key, circuit_open, budget, ...


@dataclass(frozen=True)
class UpstreamCall:
    """What is asked of the upstream besides the messages: only what the client set (None: the upstream's
    own default, not llama.cpp's)."""

    max_tokens: int | None
    stream: bool
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # tools, tool_choice, parallel_tool_calls, response_format, top_logprobs: UpstreamRequest's fields
    fields: dict = field(default_factory=dict)
    extra_prompt_tokens: int = 0  # the tools' and schema's share of the prompt, for the budget


class UpstreamSender:
    def __init__(self, recorder: RequestRecorder, *, budget: Budget | None, audit: EgressAudit | None):
        self.recorder = recorder
        self.budget = budget
        self.audit = audit

    async def send(self, decision: SendUpstream, scanned: list[dict], messages: list[dict], call: UpstreamCall,
                   record: RequestRecord, ctx: RequestContext, store_answer: OnFinished
                   ) -> UpstreamAnswered | UpstreamFailed:
        """Send ``messages`` (OpenAI-shaped), redacted as the guard's findings in ``scanned`` (the same
        conversation, as it was scanned) and the decision's verdict say."""
        upstream, verdict = decision.upstream, decision.verdict
        vault = RedactionVault()
        try:
            sent = redact_structured(vault, messages, scanned, verdict.to_redact) if verdict.to_redact else messages
        except RedactionIncomplete as exc:
            log.warning("not sent to %s: %s; answering locally", upstream.name, exc)
            return UpstreamFailed("redaction_incomplete")
        reservation = None
        opened = None
        max_tokens = call.max_tokens
        try:
            if self.budget is not None:
                # An explicit max_tokens makes the reserved worst case a real bound.
                max_tokens = max_tokens or self.budget.settings.default_max_tokens
                prompt_tokens = estimate_prompt_tokens(vault.redact(scanned, verdict.to_redact)
                                                       if verdict.to_redact else scanned)
                reservation = self.budget.reserve(upstream.name, worst_case_usd(
                    upstream.settings, prompt_tokens + call.extra_prompt_tokens, max_tokens))
            if not await self._audit_egress(decision, sent, record, ctx):
                if reservation is not None:
                    self.budget.release(reservation)
                return UpstreamFailed("audit_unavailable")
            request = UpstreamRequest(messages=sent, max_tokens=max_tokens, temperature=call.temperature,
                                      top_p=call.top_p, stop=list(call.stop), seed=call.seed, **call.fields)
            opened = await open_upstream(upstream, request)
            if not call.stream:
                # Nothing reaches a non-streaming client before the end, so a failure
                # anywhere in the upstream's answer can still be answered locally.
                opened = await buffer_answer(opened)
        except UpstreamError as exc:
            if reservation is not None:
                # Once the upstream had begun, it may bill for the attempt: count the worst case.
                self.budget.settle(reservation, reservation.amount if opened is not None else 0.0)
            log.info("upstream %s failed (%s); answering locally", upstream.name, exc.reason)
            return UpstreamFailed(exc.reason)
        return UpstreamAnswered(self._relay(opened, record, ctx.started_at, reservation, store_answer, vault))

    async def _audit_egress(self, decision: SendUpstream, sent: list[dict], record: RequestRecord,
                            ctx: RequestContext) -> bool:
        """Write the egress audit row; False if it cannot be written (then nothing may leave)."""
        if self.audit is None:
            return True
        # Committed before anything is sent: a crash mid-request still leaves the trace.
        try:
            await self._write_audit(decision, sent, record, ctx)
        except sqlite3.Error as exc:
            log.warning("the egress audit cannot be written (%s): answering locally, nothing is sent", exc)
            return False
        return True

    async def _write_audit(self, decision: SendUpstream, sent: list[dict], record: RequestRecord,
                           ctx: RequestContext) -> None:
        upstream = decision.upstream
        await self.audit.record(EgressRecord(
            upstream=upstream.name, trust=upstream.settings.trust, model=upstream.settings.model,
            action=decision.verdict.action, redacted=count_types(decision.verdict.to_redact),
            content_sha256=content_sha256(sent), reason=decision.egress_reason, request_id=record.request_id,
            namespace=ctx.namespace))

    def _relay(self, opened: OpenedUpstream, record: RequestRecord, started: float,
               reservation: Reservation | None, store_answer: OnFinished, vault: RedactionVault) -> Generation:
        """Pass an upstream's answer through, logging route, tokens and cost at the end,
        settling the budget reservation with the real cost, and caching the answer."""
        upstream = opened.upstream
        record.route = upstream.settings.trust  # onprem | cloud

        def price(answer: AnswerText):
            record.cost_usd = cost_usd(upstream, answer.finished)
            if reservation is not None:
                self.budget.settle(reservation, record.cost_usd)
            return store_answer(answer)

        async def events() -> AsyncIterator[AnswerEvent]:
            try:
                source = restore_placeholders(_prepend(opened.first, opened.rest), vault)
                async for event in self.recorder.observe(source, record, started, price):
                    yield event
            finally:
                if reservation is not None and reservation.amount:
                    # Broke off mid-answer: the upstream may have charged for it all; count the worst case.
                    self.budget.settle(reservation, reservation.amount)

        return Generation(record.request_id, upstream.settings.model, record.route, events())


async def _prepend(first: AnswerEvent, rest: AsyncIterator[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        await rest.aclose()
