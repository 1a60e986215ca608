"""The words every part of localllm shares, and nothing else.

Engine events (what an answer is made of, from the local model, the cache or an
upstream alike), sampling settings, the per-request facts that come with a
request, and the client's say in escalation. Every room imports this module;
it imports none of them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from time import perf_counter
from typing import Literal

# -- sampling -------------------------------------------------------------------

# llama.cpp's own server defaults, used where a request leaves a setting out.
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_P = 0.95
DEFAULT_TOP_K = 40
DEFAULT_MIN_P = 0.05
DEFAULT_REPEAT_PENALTY = 1.0


@dataclass(frozen=True)
class Sampling:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # (token id, bias) pairs; a bias of -100 or less bans the token (OpenAI's convention).
    logit_bias: tuple[tuple[int, float], ...] = ()
    # A GBNF grammar the answer must follow (JSON output, tool calls), or None.
    grammar: str | None = None


# -- answer events --------------------------------------------------------------


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, and the most likely alternatives at its place."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()  # (token, logprob, bytes), most likely first


@dataclass(frozen=True)
class TextDelta:
    text: str
    # The tokens whose text this delta carries, when the request asked for logprobs.
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """A whole function call the answer makes (an upstream's; the local model's calls are read from its
    text at the edge, see ``tool_calls.py``)."""

    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


def new_call_id() -> str:
    """A tool call's id, in OpenAI's style (for calls that come without one)."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" | "length" | "tool_calls" | "content_filter"
    prompt_tokens: int
    completion_tokens: int
    # How sure the model was (local generation only): for the confidence cascade.
    mean_logprob: float | None = None
    mean_entropy: float | None = None
    # What generating it cost (local generation only): its share of each decode step's energy.
    energy_joules: float | None = None
    energy_source: str | None = None  # "rapl" (measured) | "estimated" (CPU time x watts per core)


AnswerEvent = TextDelta | ToolCall | Finished


class AnswerText:
    """An answer put together from its events: the text so far, its tool calls, and the Finished event
    once it came."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.calls: list[ToolCall] = []
        self.finished: Finished | None = None
        self.logprobs: list[TokenLogprob] = []

    def add(self, event: AnswerEvent) -> str:
        """Take one event; returns its text ('' for the others)."""
        if isinstance(event, TextDelta):
            self._parts.append(event.text)
            self.logprobs.extend(event.logprobs)
            return event.text
        if isinstance(event, ToolCall):
            self.calls.append(event)
            return ""
        self.finished = event
        return ""

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def started(self) -> bool:
        return bool(self._parts or self.calls)

    @classmethod
    def of(cls, events: Iterable[AnswerEvent]) -> AnswerText:
        answer = cls()
        for event in events:
            answer.add(event)
        return answer

    @classmethod
    async def read(cls, events: AsyncIterable[AnswerEvent]) -> AnswerText:
        """Read a whole answer (the caller closes ``events``)."""
        answer = cls()
        async for event in events:
            answer.add(event)
        return answer


# -- per-request facts ----------------------------------------------------------

Route = Literal["local", "cache", "onprem", "cloud"]
Escalation = Literal["never", "auto", "prefer"]
ESCALATION_ORDER: tuple[Escalation, ...] = ("never", "auto", "prefer")  # strictest first
DEFAULT_NAMESPACE = "default"


def stricter(*choices: Escalation | None) -> Escalation:
    """A client's header and body field combine to the stricter one."""
    given = [c for c in choices if c is not None]
    return min(given, key=ESCALATION_ORDER.index) if given else "auto"


@dataclass
class RequestContext:
    """What comes with a request besides its body (from HTTP headers, or the CLI)."""

    namespace: str = DEFAULT_NAMESPACE
    skip_cache_lookup: bool = False  # Cache-Control: no-cache
    skip_cache_store: bool = False   # Cache-Control: no-store
    escalation: Escalation | None = None  # X-LocalLLM-Escalation: never | auto | prefer
    # How long the local model stays loaded after this request, in seconds (infinity: until memory is
    # needed): X-LocalLLM-Keep-Alive, or Ollama's keep_alive. None: the model's own keep-alive.
    keep_alive_s: float | None = None
    started_at: float = field(default_factory=perf_counter)
