"""An accepted request: what serves it, and its answer's events once iterated."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from localllm.daemon.engine.tool_calls import ToolPlan
from localllm.store.semantic_cache import CachedAnswer
from localllm.vocabulary import AnswerEvent, AnswerText, Finished, Route, TextDelta, ToolCall, new_call_id

_REPLAY_PIECES = re.compile(r"\s*\S+|\s+")


@dataclass
class Generation:
    id: str
    model: str
    route: Route
    events: AsyncIterator[AnswerEvent]
    cache: str | None = None  # hit | miss | bypass; None when no cache is configured
    similarity: float | None = None
    fallback_reason: str | None = None  # another target was meant to answer; why it did not
    route_reason: str | None = None  # why it left the device: explicit_model | router | client_prefer | cascade_*
    tool_plan: ToolPlan | None = None  # the answer may be tool calls, written as this plan says
    created: int = field(default_factory=lambda: int(time.time()))


# An answer with tool calls (an upstream's) is cached as this JSON document, with this finish reason.
CALLS_FINISH_REASON = "tool_calls"


def stored_form(answer: AnswerText) -> tuple[str, str]:
    """(text, finish reason) to cache for a finished answer; its tool calls, if any, go into the text."""
    if not answer.calls:
        reason = answer.finished.finish_reason
        return answer.text, "stop" if reason == CALLS_FINISH_REASON else reason  # "tool_calls" with no calls
    calls = [{"name": call.name, "arguments": call.arguments} for call in answer.calls]
    return json.dumps({"content": answer.text, "tool_calls": calls}, ensure_ascii=False), CALLS_FINISH_REASON


def _stored_calls(hit: CachedAnswer) -> tuple[str, list[ToolCall]]:
    try:
        stored = json.loads(hit.text) if hit.finish_reason == CALLS_FINISH_REASON else None
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or not isinstance(stored.get("tool_calls"), list):
        return hit.text, []
    # Fresh ids, as every answer gets: a client may keep the earlier ones in its history.
    return stored["content"], [ToolCall(new_call_id(), call["name"], call["arguments"])
                               for call in stored["tool_calls"]]


async def replay_events(hit: CachedAnswer) -> AsyncIterator[AnswerEvent]:
    """A cached answer as a stream of word-sized pieces, as if it were being generated."""
    text, calls = _stored_calls(hit)
    for piece in _REPLAY_PIECES.findall(text):
        yield TextDelta(piece)
    for call in calls:
        yield call
    yield Finished(hit.finish_reason, hit.usage["prompt_tokens"], hit.usage["completion_tokens"])


async def iterate(events: list[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    for event in events:
        yield event


class HeldEvents:
    """An answer's events that hold something (a loaded model) until they end: at the last event, on an
    error, when closed (even before the first event), or when dropped unread."""

    def __init__(self, events: AsyncIterator[AnswerEvent], release: Callable[[], None]):
        self._events, self._release = events, release

    def __aiter__(self) -> HeldEvents:
        return self

    async def __anext__(self) -> AnswerEvent:
        try:
            return await anext(self._events)
        except BaseException:  # the end (StopAsyncIteration) included
            self._release()
            raise

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._release()

    def __del__(self) -> None:
        self._release()
