"""GET /ui: the dashboard page, served from files in the package (no build step, nothing from a CDN).

The page and its script hold no data, so they are served without the token (a browser cannot attach one
to a navigation); everything it shows comes from /metrics, /api/ps and /health, fetched by the page with
the token when the daemon has one. The Host check applies as everywhere (no DNS rebinding), and the page
forbids framing and any script or style that is not its own.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from localllm.daemon.http.openapi import documented
from localllm.errors import NotFound

UI_PATHS = frozenset({"/ui", "/ui/", "/ui/ui.js", "/ui/ui.css"})
_FILES = {"ui.js": "text/javascript", "ui.css": "text/css", "index.html": "text/html"}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                       "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"}


def _file(name: str) -> web.Response:
    if name not in _FILES:
        raise NotFound(f"There is no /ui/{name}: the dashboard is at /ui.")
    body = files("localllm.daemon.http").joinpath("ui", name).read_bytes()
    return web.Response(body=body, content_type=_FILES[name], charset="utf-8", headers=_HEADERS)


@documented(summary="The dashboard page (HTML; its data comes from /metrics, /api/ps and /health).", public=True,
            response={"type": "string"}, errors=(403,))
async def page(request: web.Request) -> web.Response:
    return _file("index.html")


@documented(summary="The dashboard's script and style sheet.", public=True, response={"type": "string"},
            errors=(401, 403), query=({"name": "name", "in": "path", "required": True,
                                       "schema": {"type": "string", "enum": ["ui.js", "ui.css"]}},))
async def asset(request: web.Request) -> web.Response:
    return _file(request.match_info["name"])


def add_ui_routes(app: web.Application) -> None:
    app.router.add_get("/ui", page)
    app.router.add_get("/ui/", page)
    app.router.add_get("/ui/{name}", asset)
