"""One request-log row per request, committed before the client sees the end of its answer.

``RequestRecorder.observe`` passes an answer's events on and logs the request
(with ``on_finished``'s work, such as storing the answer in the cache) before
the Finished event goes out, so a client that saw the end has a committed row.
Errors and clients that leave early are logged too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from localllm.daemon.pipeline.generation import stored_form
from localllm.daemon.pipeline.metrics import DaemonMetrics
from localllm.decision.guard.scan import Finding
from localllm.decision.guard.vault import RedactionVault
from localllm.errors import LocalLLMError
from localllm.store.request_log import RequestLog, RequestRecord, prompt_sha256
from localllm.vocabulary import AnswerEvent, AnswerText, Finished, RequestContext

# Called with the whole answer (its ``finished`` set) before the end goes out: e.g. to cache it.
OnFinished = Callable[[AnswerText], Awaitable | None]


class RequestRecorder:
    def __init__(self, request_log: RequestLog | None, metrics: DaemonMetrics | None = None):
        self.request_log = request_log
        self.metrics = metrics

    @property
    def keeps_prompts(self) -> bool:
        return self.request_log is not None and self.request_log.log_prompts

    @staticmethod
    def new_record(endpoint: str, ctx: RequestContext, model: str, stream: bool, prompt: str | list[dict]
                   ) -> RequestRecord:
        record = RequestRecord(endpoint=endpoint, status=0, namespace=ctx.namespace, model=model, stream=stream,
                               prompt_sha256=prompt_sha256(prompt))
        record.prompt_text = prompt if isinstance(prompt, str) else render_messages(prompt)
        return record

    def note_sensitive(self, record: RequestRecord, messages: list[dict] | None, sensitive: list[Finding]) -> None:
        record.sensitive = len(sensitive)
        if self.metrics is not None:
            self.metrics.observe_findings(sensitive)
        if sensitive and messages is not None:
            # With store.log_prompts on, the log keeps the prompt, but never its sensitive values.
            record.prompt_text = render_messages(RedactionVault().redact(messages, sensitive))

    async def observe(self, source: AsyncIterator[AnswerEvent], record: RequestRecord, started: float,
                      on_finished: OnFinished | None = None,
                      before_finish: Callable[[], Awaitable[None]] | None = None) -> AsyncIterator[AnswerEvent]:
        """Pass ``source``'s events on, logging the request before the Finished event goes out."""
        answer = AnswerText()
        try:
            async for event in source:
                if not answer.started and not isinstance(event, Finished):
                    record.ttft_ms = ms_since(started)
                answer.add(event)
                if answer.finished is not None:
                    record.prompt_tokens, record.completion_tokens = event.prompt_tokens, event.completion_tokens
                    record.energy_joules, record.energy_source = event.energy_joules, event.energy_source
                    record.answer_text = stored_form(answer)[0]
                    if before_finish is not None:
                        await before_finish()
                    extra = on_finished(answer) if on_finished else None
                    await asyncio.gather(self.finish(record, started, 200), *([extra] if extra else []))
                yield event
        except LocalLLMError as exc:
            self.finish_soon(record, started, exc.status, type(exc).__name__)
            exc.logged = True  # the HTTP edge must not log it a second time
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if answer.finished is None:  # the client left before the end
                self.finish_soon(record, started, 499, "ClientDisconnected")
            raise
        finally:
            await source.aclose()

    async def finish(self, record: RequestRecord, started: float, status: int, error_class: str | None = None
                     ) -> None:
        record.status, record.error_class, record.latency_ms = status, error_class, ms_since(started)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.request_log is not None:
            await self.request_log.record(record)

    def finish_soon(self, record: RequestRecord, started: float, status: int, error_class: str) -> None:
        record.status, record.error_class, record.latency_ms = status, error_class, ms_since(started)
        if self.metrics is not None:
            self.metrics.observe(record)
        if self.request_log is not None:
            self.request_log.record_soon(record)


def render_messages(messages: list[dict]) -> str:
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
