"""An accepted request: what serves it, and its answer's events once iterated."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from localllm.daemon.engine.tool_calls import ToolPlan
from localllm.store.semantic_cache import CachedAnswer
from localllm.vocabulary import AnswerEvent, Finished, Route, TextDelta

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


async def replay_events(hit: CachedAnswer) -> AsyncIterator[AnswerEvent]:
    """A cached answer as a stream of word-sized pieces, as if it were being generated."""
    for piece in _REPLAY_PIECES.findall(hit.text):
        yield TextDelta(piece)
    yield Finished(hit.finish_reason, hit.usage["prompt_tokens"], hit.usage["completion_tokens"])


async def iterate(events: list[AnswerEvent]) -> AsyncIterator[AnswerEvent]:
    for event in events:
        yield event
