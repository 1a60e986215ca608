"""One streamed chat request to one upstream, in its own wire format: a single attempt.

A provider turns an ``UpstreamRequest`` into the upstream's HTTP request, and its
SSE answer into the daemon's own events (``TextDelta`` ... then one ``Finished``,
finish reason in OpenAI terms, token counts from the upstream's usage). Every
failure becomes an ``UpstreamError`` with a reason code. Retries, timeouts
between events, the circuit breaker and the concurrency limit wrap this in
``reliability.py``; a provider knows nothing of them.

Keys: the key goes into one header and nowhere else. aiohttp's exceptions carry
the request's headers (``request_info``), so they are never chained onto ours.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

import aiohttp

from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamUnreachable,
    scrub,
)
from localllm.fallback.sse_reader import SSEEvent, read_sse
from localllm.vocabulary import Finished, TextDelta, ToolCall, new_call_id

log = logging.getLogger(__name__)

SessionSource = Callable[[], aiohttp.ClientSession]


@dataclass(frozen=True)
class Progress:
    """The upstream sent something that is not an event yet (a tool call's arguments, arriving piece by
    piece): it is alive. The reliability layer takes it as such and never passes it on."""


PROGRESS = Progress()
StreamEvent = TextDelta | ToolCall | Finished | Progress


# What a request may need of an upstream beyond plain chat (RequestFacts.needs names them).
Capability = Literal["tools", "json_output", "logprobs"]


@dataclass(frozen=True)
class UpstreamRequest:
    """What the pipeline asks an upstream for, in OpenAI's shapes; None leaves a setting to the upstream."""

    # OpenAI's messages: role system | user | assistant (content, tool_calls) | tool (content, tool_call_id)
    messages: list[dict]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    tools: list[dict] | None = None  # [{"type": "function", "function": {name, description, parameters}}]
    tool_choice: str | dict | None = None  # auto | none | required | {"type": "function", "function": {name}}
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None  # {"type": "json_object"} | {"type": "json_schema", "json_schema": ...}
    top_logprobs: int | None = None  # None: no logprobs; n: each token's logprob and its n likeliest others


class Provider:
    """Base: the HTTP exchange and its error mapping; subclasses supply the wire format."""

    # What this wire format can carry besides plain chat.
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, settings: UpstreamSettings, session: SessionSource):
        self.settings = settings
        self.name = settings.name
        self._session = session
        # total stays None: the reliability layer owns the first-byte, stall and total deadlines.
        self._timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout_s,
                                              sock_connect=settings.connect_timeout_s)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, url={self.settings.url!r})"

    async def stream_chat(self, request: UpstreamRequest, api_key: str | None) -> AsyncIterator[StreamEvent]:
        url, body, headers = self.build(request, api_key)
        try:
            async with self._session().post(url, json=body, headers=headers, timeout=self._timeout) as response:
                if response.status != 200:
                    raise await self._status_error(response, api_key)
                async for item in self.translate(read_sse(response.content), api_key):
                    yield item
        except aiohttp.ClientError as exc:
            # Not chained: some aiohttp exceptions (ClientResponseError) hold the request headers, key included.
            # A connect timeout is what an offline box looks like: another attempt would only
            # triple the wait before the local answer. Refused or reset connections fail fast; retry those.
            error = UpstreamUnreachable(self.name, self._connection_message(exc),
                                        retryable=not isinstance(exc, aiohttp.ConnectionTimeoutError))
            error.offline = isinstance(exc, OFFLINE_ERRORS)
            raise error from None
        except (UnicodeDecodeError, ValueError) as exc:  # ValueError: a line past aiohttp's limit
            raise UpstreamBadResponse(self.name, f"Upstream {self.name!r} sent an unreadable stream: "
                                      f"{type(exc).__name__}.") from None

    def build(self, request: UpstreamRequest, api_key: str | None) -> tuple[str, dict, dict[str, str]]:
        """(url, JSON body, headers) for one streamed request."""
        raise NotImplementedError

    def translate(self, events: AsyncIterator[SSEEvent], api_key: str | None) -> AsyncIterator[StreamEvent]:
        """The upstream's SSE events as TextDelta ... Finished; raise UpstreamError on anything else.

        ``api_key`` is only for ``scrub``bing error text the upstream sends mid-stream."""
        raise NotImplementedError

    def parse_json(self, data: str) -> dict:
        try:
            payload = json.loads(data)
        except ValueError:
            raise self.bad("an event that is not JSON") from None
        if not isinstance(payload, dict):
            raise self.bad("an event that is not a JSON object")
        return payload

    def error_message(self, body: str) -> str:
        """The human part of an error body in this wire format (both put it at error.message)."""
        try:
            error = json.loads(body).get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return error["message"]
        except (ValueError, AttributeError):
            pass
        return body

    def tool_call(self, call_id: str | None, name: str | None, arguments: str) -> ToolCall:
        """A whole call from its streamed parts; its arguments must be a JSON object (or nothing)."""
        if not name:
            raise self.bad("a tool call without a function name")
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise self.bad(f"tool call arguments for {name!r} that are not a JSON object")
        return ToolCall(call_id or new_call_id(), name, json.dumps(parsed, ensure_ascii=False))

    def bad(self, what: str) -> UpstreamBadResponse:
        return UpstreamBadResponse(self.name, f"Upstream {self.name!r} sent a malformed answer ({what}). "
                                   "Check that its kind and base_url in [[upstreams]] match the server.")

    async def _status_error(self, response: aiohttp.ClientResponse, api_key: str | None) -> UpstreamError:
        status = response.status
        try:
            body = (await response.content.read(8192)).decode("utf-8", "replace")
        except aiohttp.ClientError:
            body = ""
        detail = scrub(self.error_message(body), api_key) or response.reason or ""
        prefix = f"Upstream {self.name!r} answered HTTP {status}: {detail}"
        if status == 429:
            return UpstreamRateLimited(self.name, f"{prefix}. Lower max_concurrency, or raise the upstream's "
                                       "rate limit.", retry_after_s=retry_after_seconds(response.headers),
                                       http_status=status)
        if status >= 500:
            return UpstreamServerError(self.name, f"{prefix}. The upstream is failing; localllm retries and "
                                       "then answers locally.", retry_after_s=retry_after_seconds(response.headers),
                                       http_status=status)
        if status in (401, 403):
            hint = f"Check its key with `localllm keys set {self.name}`."
        elif status == 404:
            hint = "Check base_url and model in [[upstreams]]."
        else:
            hint = "The upstream refused this request."
        return UpstreamRejected(self.name, f"{prefix}. {hint}", http_status=status)

    def _connection_message(self, exc: aiohttp.ClientError) -> str:
        # ClientConnectorError's text names host, port and OS error, never headers; other
        # ClientErrors (payload, disconnect) are named by class only, to be safe.
        detail = str(exc) if isinstance(exc, aiohttp.ClientConnectorError) else type(exc).__name__
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            detail = f"no connection within {self.settings.connect_timeout_s:g} s"
        return (f"Could not reach upstream {self.name!r} at {self.settings.url} ({detail}). "
                "Check the network and base_url in [[upstreams]]; meanwhile localllm answers locally.")


def as_object(value: object) -> dict:
    """``value`` if it is a JSON object, else an empty one: a field of the wrong type reads as absent."""
    return value if isinstance(value, dict) else {}


def as_count(value: object) -> int:
    """A token count from an upstream's usage: a non-negative whole number, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value == value and 0 <= value < 2**53:
        return int(value)
    return 0


def as_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# What a box whose network is down sees: connects that time out, names that don't resolve.
OFFLINE_ERRORS = (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorDNSError)


def retry_after_seconds(headers) -> float | None:
    """The Retry-After header in its seconds form; the HTTP-date form is left to the backoff."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def provider_for(settings: UpstreamSettings, session: SessionSource) -> Provider:
    from localllm.fallback.anthropic_translation import AnthropicProvider
    from localllm.fallback.openai_translation import OpenAIChatProvider

    if settings.kind == "anthropic":
        return AnthropicProvider(settings, session)
    return OpenAIChatProvider(settings, session)
