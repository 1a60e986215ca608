"""A real HTTP file server on 127.0.0.1 for the pull tests: Range support, scripted failures,
redirects, and bodies of unknown length."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web


@dataclass
class ServedFile:
    body: bytes
    status: int = 200
    cut_after: int | None = None  # close the connection after this many bytes...
    cuts_left: int = 0  # ...in this many responses
    ignore_range: bool = False  # answer 200 with the whole file, like servers without resume
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False  # no Content-Length: the client cannot know the size in advance
    redirect_to: str | None = None  # answer 302 to this URL


class LoopbackFileServer:
    """A real HTTP file server on 127.0.0.1 with Range support and scripted failures."""

    def __init__(self) -> None:
        self.files: dict[str, ServedFile] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.port = 0

    def serve(self, path: str, body: bytes, **behaviour) -> str:
        self.files[path] = ServedFile(body, **behaviour)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.raw_path, request.headers.get("Range")))
        served = self.files.get(request.raw_path)
        if served is None:
            return web.Response(status=404, text="no such file")
        if served.redirect_to is not None:
            raise web.HTTPFound(served.redirect_to)
        if served.status != 200:
            return web.Response(status=served.status, text="scripted failure")
        body, start, status = served.body, 0, 200
        requested = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if requested and not served.ignore_range:
            start = int(requested[1])
            if start >= len(body):
                return web.Response(status=416, text="416: Requested Range Not Satisfiable",
                                    headers={"Content-Range": f"bytes */{len(body)}"})
            status = 206
        payload = body[start:]
        response = web.StreamResponse(status=status, headers={"Accept-Ranges": "bytes", **served.headers})
        if served.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(payload)
        if status == 206:
            response.headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        await response.prepare(request)
        limit = len(payload)
        if served.cuts_left > 0 and served.cut_after is not None:
            served.cuts_left -= 1
            limit = min(limit, served.cut_after)
        for offset in range(0, limit, 16384):
            await response.write(payload[offset:min(offset + 16384, limit)])
        if limit < len(payload):
            request.transport.close()  # what a dropped connection looks like to the client
            return response
        await response.write_eof()
        return response


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
