"""Helpers shared by the upstream tests."""

from __future__ import annotations

from localllm.fallback.providers import UpstreamRequest
from localllm.vocabulary import Finished, TextDelta

QUESTION = UpstreamRequest(messages=[{"role": "system", "content": "Answer in one sentence."},
                                     {"role": "user", "content": "What is the capital of France?"}])


async def collect(upstream, request: UpstreamRequest = QUESTION, api_key: str | None = "sk-test",
                  into: list | None = None) -> tuple[str, Finished]:
    """Run one streamed request to the end: (the text, the Finished event).

    ``into`` receives every event as it arrives, so a test can see what came before an error."""
    events = [] if into is None else into
    async for event in upstream.stream_chat(request, api_key):
        events.append(event)
    assert isinstance(events[-1], Finished), events
    assert all(isinstance(e, TextDelta) for e in events[:-1])
    return "".join(e.text for e in events[:-1]), events[-1]
