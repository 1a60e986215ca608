"""Read a server-sent-events body into (event, data) pairs, as the SSE spec says.

Both upstream wire formats are SSE: OpenAI sends bare ``data:`` lines ending in
``data: [DONE]``, Anthropic names every event (``event: message_start``). An
event only counts once its closing blank line arrives, so a stream cut in the
middle of an event yields nothing for it and the caller sees the stream end
without a proper finish.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" when the server named none
    data: str


async def read_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """``lines``: the body split at newlines (iterating an aiohttp ``response.content`` does that)."""
    event, data = "", []
    async for raw in lines:
        # A byte that is not UTF-8 becomes U+FFFD rather than failing the whole answer.
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue  # a comment; servers send them as keep-alives
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        # "id" and "retry" matter to browsers reconnecting, not to one streamed answer.
