"""Server-sent events in the OpenAI style: `data: {json}` frames, then `data: [DONE]`."""

from __future__ import annotations

import json

from aiohttp import web


class ClientGone(Exception):
    """The client closed the connection while we were streaming to it."""


class SSEWriter:
    def __init__(self, request: web.Request, headers: dict[str, str] | None = None):
        self.request = request
        self.response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **(headers or {}),
        })

    async def open(self) -> None:
        await self.response.prepare(self.request)

    async def send(self, payload: dict) -> None:
        await self._write(b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

    async def done(self) -> None:
        await self._write(b"data: [DONE]\n\n")
        await self.response.write_eof()

    async def _write(self, data: bytes) -> None:
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ClientGone()
        try:
            await self.response.write(data)
        except (ConnectionResetError, ConnectionError) as exc:
            raise ClientGone() from exc
