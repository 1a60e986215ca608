"""Sending a request to an upstream, and knowing before the first byte whether it works.

A client names an upstream as its model ("openai" or "openai/gpt-4o-mini").
Until the upstream's first event arrives nothing has been sent to the client,
so any failure up to then is answered locally instead (degrade, don't fail);
after it, errors surface in the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from localllm.errors import ModelNotFound
from localllm.fallback.errors import UpstreamError
from localllm.fallback.keys import get_key
from localllm.fallback.providers import UpstreamRequest
from localllm.fallback.reliability import ReliableUpstream
from localllm.fallback.upstream_registry import UpstreamRegistry
from localllm.vocabulary import Finished, TextDelta


class NoUpstreamKey(UpstreamError):
    reason = "no_key"


@dataclass
class OpenedUpstream:
    upstream: ReliableUpstream
    first: TextDelta | Finished
    rest: AsyncIterator[TextDelta | Finished]


def upstream_named(upstreams: UpstreamRegistry | None, model: str) -> ReliableUpstream | None:
    """The upstream a client's model field names, or None for a local model."""
    if upstreams is None:
        return None
    name, _, asked = model.partition("/")
    if name not in upstreams:
        return None
    upstream = upstreams.get(name)
    if asked and asked != upstream.settings.model:
        raise ModelNotFound(f"Upstream {name!r} serves {upstream.settings.model!r}, not {asked!r}: ask for "
                            f"'{name}' or '{name}/{upstream.settings.model}', or add another [[upstreams]] entry.",
                            param="model")
    return upstream


async def open_upstream(upstream: ReliableUpstream, request: UpstreamRequest) -> OpenedUpstream:
    """Start the upstream request and wait for its first event; raises UpstreamError if it fails first."""
    key = await asyncio.get_running_loop().run_in_executor(None, get_key, upstream.name)
    if key is None and upstream.settings.kind != "openai-compatible":
        raise NoUpstreamKey(upstream.name, f"No API key for {upstream.name}: run `localllm keys set "
                                           f"{upstream.name}`.", retryable=False)
    events = upstream.stream_chat(request, key).__aiter__()
    try:
        first = await anext(events)
    except StopAsyncIteration:
        raise UpstreamError(upstream.name, f"{upstream.name} ended its answer before it began.") from None
    return OpenedUpstream(upstream, first, events)


def cost_usd(upstream: ReliableUpstream, finished: Finished) -> float:
    settings = upstream.settings
    return round((finished.prompt_tokens * settings.price_input_per_mtok
                  + finished.completion_tokens * settings.price_output_per_mtok) / 1e6, 8)


async def buffer_answer(opened: OpenedUpstream) -> OpenedUpstream:
    """Read the whole answer now; raises UpstreamError if it breaks off anywhere."""
    events = [opened.first]
    try:
        async for event in opened.rest:
            events.append(event)
    finally:
        await opened.rest.aclose()
    if not isinstance(events[-1], Finished):
        raise UpstreamError(opened.upstream.name, f"{opened.upstream.name} ended its answer without finishing it.")

    async def replay() -> AsyncIterator[TextDelta | Finished]:
        for event in events[1:]:
            yield event

    return OpenedUpstream(opened.upstream, events[0], replay())
