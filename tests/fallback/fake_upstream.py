"""A loopback stand-in for cloud APIs: speaks OpenAI chat completions and the Anthropic
Messages API (JSON and SSE) on 127.0.0.1, with faults switched on per test.

Faults are queued with ``fail_next`` and used up one per request, or set with
``fail_always``; everything else answers normally. ``test_fake_upstream_fidelity``
checks with the official SDKs that the normal answers are the real wire format.
"""

from __future__ import annotations

import asyncio
import json
import re
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
    # Answer with these tool calls (name, arguments) after the text ("" for none), or from the request;
    # an Anthropic request that forces a tool gets it called with ``forced_input``.
    calls: list[tuple[str, dict]] | None = None
    calls_from: Callable[[dict], list[tuple[str, dict]]] | None = None
    forced_input: dict = field(default_factory=lambda: {"answer": "Paris"})

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
        return await self.start_on(0)

    async def start_on(self, port: int) -> FakeUpstream:
        """Listen on ``port`` (0: any free one); a server restarted on its old port."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self._stopping.set()  # wakes handlers that are stalling on purpose
        if self._runner is not None:
            await self._runner.cleanup()

    # -- shared ----------------------------------------------------------------

    def _calls(self, body: dict) -> list[tuple[str, dict]]:
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "tool":  # Anthropic, a forced tool
            return [(choice["name"], self.forced_input)]
        if self.calls_from is not None:
            return self.calls_from(body)
        return list(self.calls or [])

    def _pieces(self, max_tokens: int | None, body: dict | None = None) -> tuple[list[str], bool]:
        """The answer split in word-sized chunks (one "token" each), cut at max_tokens."""
        text = self.answer_from(body) if self.answer_from is not None and body is not None else self.text
        if not text:
            return [], False
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
        problem = (anthropic_request_problem(body) if request.path == "/v1/messages"
                   else openai_request_problem(body))
        if problem is not None:  # what the real API says to a malformed request
            raise _Refused(problem, anthropic=request.path == "/v1/messages")
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
        try:
            body, fault = await self._begin(request)
        except _Refused as refused:
            return refused.response()
        early = self._early_fault(request, fault, anthropic=False)
        if early is not None:
            return early
        pieces, cut = self._pieces(body.get("max_completion_tokens") or body.get("max_tokens"), body)
        calls = [(f"call_{uuid.uuid4().hex[:20]}", name, json.dumps(arguments)) for name, arguments in
                 (self._calls(body) if body.get("tools") else [])]
        finish = "tool_calls" if calls else "length" if cut else "stop"
        ident, created, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body["model"]
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(pieces) + len(calls),
                 "total_tokens": self.prompt_tokens + len(pieces) + len(calls)}
        top = body.get("top_logprobs") or 0
        wants_logprobs = bool(body.get("logprobs"))
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces) if pieces or not calls else None}
            if calls:
                message["tool_calls"] = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                                         for i, n, a in calls]
            return web.json_response({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message,
                             "logprobs": _logprobs(pieces, top) if wants_logprobs else None,
                             "finish_reason": finish}],
                "usage": usage})

        def chunk(delta: dict, finish_reason: str | None, logprobs: dict | None = None) -> bytes:
            payload = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                    "finish_reason": finish_reason}]}
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        response = await self._open_sse(request)
        await response.write(chunk({"role": "assistant", "content": ""}, None))
        for sent, piece in enumerate(pieces):
            if await self._mid_stream_fault(request, response, fault, sent):
                return response
            await self._pause(self.chunk_delay_s)
            await response.write(chunk({"content": piece}, None, _logprobs([piece], top) if wants_logprobs else None))
        if await self._mid_stream_fault(request, response, fault, len(pieces)):
            return response
        for index, (call_id, name, arguments) in enumerate(calls):
            # As OpenAI streams a call: id, type and name with empty arguments, then the arguments in pieces.
            await response.write(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                                        "function": {"name": name, "arguments": ""}}]}, None))
            for start in range(0, len(arguments), 7):
                await self._pause(self.chunk_delay_s)
                await response.write(chunk({"tool_calls": [{"index": index, "function": {
                    "arguments": arguments[start:start + 7]}}]}, None))
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
        try:
            body, fault = await self._begin(request)
        except _Refused as refused:
            return refused.response()
        early = self._early_fault(request, fault, anthropic=True)
        if early is not None:
            return early
        calls = [(f"toolu_{uuid.uuid4().hex[:20]}", name, arguments) for name, arguments in
                 (self._calls(body) if body.get("tools") else [])]
        forced = isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") in ("tool", "any")
        pieces, cut = ([], False) if forced else self._pieces(body["max_tokens"], body)
        stop_reason = "tool_use" if calls else "max_tokens" if cut else "end_turn"
        ident, model = f"msg_{uuid.uuid4().hex[:24]}", body["model"]
        message = {"id": ident, "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 1}}
        if not body.get("stream"):
            content = [{"type": "text", "text": "".join(pieces)}] if pieces else []
            content += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
            message.update(content=content, stop_reason=stop_reason,
                           usage={"input_tokens": self.prompt_tokens, "output_tokens": len(pieces) + len(calls)})
            return web.json_response(message)

        async def send(event: str, payload: dict) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(payload)}\n\n".encode())

        response = await self._open_sse(request)
        await send("message_start", {"type": "message_start", "message": message})
        if fault is not None and fault.kind == "error_event":
            await send("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            await response.write_eof()
            return response
        await send("ping", {"type": "ping"})
        block = 0
        if pieces or not calls:
            await send("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
            for sent, piece in enumerate(pieces):
                if await self._mid_stream_fault(request, response, fault, sent):
                    return response
                await self._pause(self.chunk_delay_s)
                await send("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": piece}})
            if await self._mid_stream_fault(request, response, fault, len(pieces)):
                return response
            await send("content_block_stop", {"type": "content_block_stop", "index": 0})
            block = 1
        for index, (call_id, name, arguments) in enumerate(calls, start=block):
            await send("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": call_id, "name": name, "input": {}}})
            text = json.dumps(arguments)
            for start in range(0, len(text), 7):
                await self._pause(self.chunk_delay_s)
                await send("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                    "type": "input_json_delta", "partial_json": text[start:start + 7]}})
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": len(pieces) + len(calls)}})
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


def _logprobs(pieces: list[str], top: int) -> dict:
    """OpenAI's choice.logprobs for these tokens: made-up but well-formed figures."""
    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [{**entry(piece, -0.25), "top_logprobs": [entry(piece, -0.25), *(
        entry(f"alt{rank}", -1.0 - rank) for rank in range(1, top))][:top]} for piece in pieces], "refusal": None}


class _Refused(Exception):
    def __init__(self, message: str, *, anthropic: bool):
        super().__init__(message)
        self.message, self.anthropic = message, anthropic

    def response(self) -> web.Response:
        body = ({"type": "error", "error": {"type": "invalid_request_error", "message": self.message}}
                if self.anthropic else
                {"error": {"message": self.message, "type": "invalid_request_error", "param": None, "code": None}})
        return web.json_response(body, status=400)


_ANTHROPIC_TOOL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")


def openai_request_problem(body: dict) -> str | None:
    """What OpenAI refuses in a conversation with tool calls: a tool result for no earlier call."""
    called: set[str] = set()
    for index, message in enumerate(body.get("messages") or []):
        for call in message.get("tool_calls") or []:
            called.add(call["id"])
            if not isinstance(call["function"]["arguments"], str):
                return f"messages[{index}].tool_calls: arguments must be a string"
        if message.get("role") == "tool" and message.get("tool_call_id") not in called:
            return (f"Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    f"with 'tool_calls' (messages[{index}]).")
    return None


def anthropic_request_problem(body: dict) -> str | None:
    """What the Messages API refuses about roles, tools and tool results (as of its 2023-06-01 version)."""
    messages = body.get("messages") or []
    for tool in body.get("tools") or []:
        if set(tool) - {"name", "description", "input_schema", "type", "cache_control"}:
            return f"tools: unexpected fields {sorted(set(tool) - {'name', 'description', 'input_schema'})}"
        if (tool.get("input_schema") or {}).get("type") != "object":
            return "tools: input_schema.type must be 'object'"
    previous_uses: set[str] = set()
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if index and messages[index - 1].get("role") == role:
            return f"messages.{index}: roles must alternate between user and assistant"
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        uses = set()
        for position, block in enumerate(blocks):
            kind = block.get("type")
            if kind == "tool_use":
                if role != "assistant" or not _ANTHROPIC_TOOL_ID.match(block.get("id", "")) \
                        or not isinstance(block.get("input"), dict):
                    return f"messages.{index}.content.{position}: invalid tool_use block"
                uses.add(block["id"])
            elif kind == "tool_result":
                if role != "user" or block.get("tool_use_id") not in previous_uses:
                    return (f"messages.{index}.content.{position}: unexpected `tool_use_id` found in `tool_result` "
                            "blocks. Each `tool_result` block must have a corresponding `tool_use` block in the "
                            "previous message.")
                if any(b.get("type") != "tool_result" for b in blocks[:position]):
                    return f"messages.{index}: tool_result blocks must come first in the user message"
            elif kind == "text":
                if not isinstance(block.get("text"), str):
                    return f"messages.{index}.content.{position}.text: Input should be a valid string"
            else:
                return f"messages.{index}.content.{position}: unknown block type {kind!r}"
        if previous_uses and role == "user":
            answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            if answered != previous_uses:
                return (f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately "
                        "after")
        previous_uses = uses
    return None
