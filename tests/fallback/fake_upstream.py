"""A loopback stand-in for cloud APIs: speaks OpenAI chat completions and the Anthropic
Messages API (JSON and SSE) on 127.0.0.1, with faults switched on per test.

Faults are queued with ``fail_next`` and used up one per request, or set with
``fail_always``; everything else answers normally. ``test_fake_upstream_fidelity``
checks with the official SDKs that the normal answers are the real wire format.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

FaultKind = Literal[
    "http_500",          # JSON error body, status 500
    "http_429",          # status 429 with Retry-After: retry_after
    "http_401",          # status 401 whose message echoes the key it was sent, as some APIs do
    "reset",             # connection aborted: before the response, or after after_chunks text chunks
    "slow_first_byte",   # nothing at all for delay_s, then a normal answer
    "stall",             # after after_chunks text chunks, silence for delay_s
    "truncated",         # after after_chunks text chunks, half an event and a clean end of stream
    "malformed_json",    # after after_chunks text chunks, an event that is not JSON
    "ignore_usage",      # a server that ignores stream_options.include_usage
    "error_event",       # Anthropic only: an overloaded_error event before any text
]


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    retry_after: str | None = None
    delay_s: float = 0.0
    after_chunks: int | None = None  # None: before the response starts


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict


def _counted(handler):
    """Track requests in flight, for the concurrency-limit test."""

    async def wrapped(self: FakeUpstream, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await handler(self, request)
        finally:
            self.in_flight -= 1

    return wrapped


@dataclass
class FakeUpstream:
    text: str = "Paris is the capital of France."
    prompt_tokens: int = 11
    chunk_delay_s: float = 0.0
    faults: deque[Fault] = field(default_factory=deque)
    always: Fault | None = None
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    # Answer from the request instead of ``text`` (e.g. echo the prompt), and cut it into
    # chunks of this many characters instead of words (to split placeholders mid-way).
    answer_from: Callable[[dict], str] | None = None
    chunk_chars: int | None = None

    def __post_init__(self):
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.port = 0

    # -- control ---------------------------------------------------------------

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def fail_always(self, fault: Fault | None) -> None:
        self.always = fault

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.root}/v1"

    async def start(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are stalling on purpose
        if self._runner is not None:
            await self._runner.cleanup()

    # -- shared ----------------------------------------------------------------

    def _pieces(self, max_tokens: int | None, body: dict | None = None) -> tuple[list[str], bool]:
        """The answer split in word-sized chunks (one "token" each), cut at max_tokens."""
        text = self.answer_from(body) if self.answer_from is not None and body is not None else self.text
        if self.chunk_chars:
            pieces = [text[i:i + self.chunk_chars] for i in range(0, len(text), self.chunk_chars)]
        else:
            words = text.split(" ")
            pieces = [words[0]] + [" " + w for w in words[1:]]
        if max_tokens is not None and max_tokens < len(pieces):
            return pieces[:max_tokens], True
        return pieces, False

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _begin(self, request: web.Request) -> tuple[dict, Fault | None]:
        body = await request.json()
        self.received.append(Received(request.path, dict(request.headers), body))
        fault = self.faults.popleft() if self.faults else self.always
        if fault is not None and fault.kind == "slow_first_byte":
            await self._pause(fault.delay_s)
        return body, fault

    async def _open_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    async def _mid_stream_fault(self, request, response, fault: Fault | None, sent: int) -> bool:
        """Apply a fault due after ``sent`` chunks; True when the stream must end here."""
        if fault is None or fault.after_chunks != sent:
            return False
        if fault.kind == "stall":
            await self._pause(fault.delay_s)
        elif fault.kind == "reset":
            request.transport.abort()
            return True
        elif fault.kind == "truncated":
            await response.write(b'data: {"id": "cut-off", "choi')
            await response.write_eof()
            return True
        elif fault.kind == "malformed_json":
            await response.write(b"data: {this is not json\n\n")
        return False

    # -- OpenAI ----------------------------------------------------------------

    @_counted
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self._begin(request)
        early = self._early_fault(request, fault, anthropic=False)
        if early is not None:
            return early
        pieces, cut = self._pieces(body.get("max_completion_tokens") or body.get("max_tokens"), body)
        finish = "length" if cut else "stop"
        ident, created, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body["model"]
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(pieces),
                 "total_tokens": self.prompt_tokens + len(pieces)}
        if not body.get("stream"):
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage})

        def chunk(delta: dict, finish_reason: str | None) -> bytes:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        response = await self._open_sse(request)
        await response.write(chunk({"role": "assistant", "content": ""}, None))
        for sent, piece in enumerate(pieces):
            if await self._mid_stream_fault(request, response, fault, sent):
                return response
            await self._pause(self.chunk_delay_s)
            await response.write(chunk({"content": piece}, None))
        if await self._mid_stream_fault(request, response, fault, len(pieces)):
            return response
        await response.write(chunk({}, finish))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage and not (fault and fault.kind == "ignore_usage"):
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [], "usage": usage}
            await response.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # -- Anthropic -------------------------------------------------------------

    @_counted
    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self._begin(request)
        early = self._early_fault(request, fault, anthropic=True)
        if early is not None:
            return early
        pieces, cut = self._pieces(body["max_tokens"], body)
        stop_reason = "max_tokens" if cut else "end_turn"
        ident, model = f"msg_{uuid.uuid4().hex[:24]}", body["model"]
        message = {"id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1}}
        if not body.get("stream"):
            message.update(content=[{"type": "text", "text": "".join(pieces)}], stop_reason=stop_reason,
                           usage={"input_tokens": self.prompt_tokens, "output_tokens": len(pieces)})
            return web.json_response(message)

        async def send(event: str, payload: dict) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode())

        response = await self._open_sse(request)
        await send("message_start", {"type": "message_start", "message": message})
        if fault is not None and fault.kind == "error_event":
            await send("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            await response.write_eof()
            return response
        await send("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        await send("ping", {"type": "ping"})
        for sent, piece in enumerate(pieces):
            if await self._mid_stream_fault(request, response, fault, sent):
                return response
            await self._pause(self.chunk_delay_s)
            await send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}})
        if await self._mid_stream_fault(request, response, fault, len(pieces)):
            return response
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        await send("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": len(pieces)}})
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response

    def _early_fault(self, request: web.Request, fault: Fault | None, *, anthropic: bool) -> web.Response | None:
        """The response for a fault that strikes before any answer, else None."""
        if fault is None or fault.after_chunks is not None:
            return None

        def error(status: int, kind: str, message: str, headers: dict | None = None) -> web.Response:
            body = ({"type": "error", "error": {"type": kind, "message": message}} if anthropic
                    else {"error": {"message": message, "type": kind, "param": None, "code": None}})
            return web.json_response(body, status=status, headers=headers)

        if fault.kind == "http_500":
            return error(500, "api_error" if anthropic else "server_error", "The server had an error.")
        if fault.kind == "http_429":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return error(429, "rate_limit_error" if anthropic else "rate_limit_exceeded", "Rate limit reached.",
                         headers)
        if fault.kind == "http_401":
            sent = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix(
                "Bearer ")
            return error(401, "authentication_error" if anthropic else "invalid_request_error",
                         f"Incorrect API key provided: {sent}.")
        if fault.kind == "reset":
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        return None
