"""GET /openapi.json: an OpenAPI 3.1 document of every endpoint, built from the app itself.

Each handler is marked with ``@documented(...)`` naming the request model the
daemon validates its body with; the document walks the app's routes and takes
each body schema from that model (pydantic's JSON Schema), so the document and
the validation are one thing, never written twice. A route without the mark
makes the document refuse to build (and the test suite fail).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from localllm import __version__
from localllm.daemon.http.app_keys import REGISTRY

ERROR_SCHEMA = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}},
}

HEADER_PARAMETERS = {
    "namespace": {"name": "X-LocalLLM-Namespace", "in": "header", "required": False,
                  "description": "Cache namespace (1-64 letters, digits, . _ : -); default 'default'.",
                  "schema": {"type": "string"}},
    "escalation": {"name": "X-LocalLLM-Escalation", "in": "header", "required": False,
                   "description": "Whether this request may go to a stronger upstream.",
                   "schema": {"type": "string", "enum": ["never", "auto", "prefer"]}},
    "cache_control": {"name": "Cache-Control", "in": "header", "required": False,
                      "description": "no-cache: skip the cache lookup; no-store: do not cache the answer.",
                      "schema": {"type": "string"}},
}

STATUS_TEXT = {400: "Invalid request", 401: "Missing or wrong API token", 403: "Host or Origin not allowed",
               404: "No such model (or feature off)", 413: "Body too large", 415: "Not JSON", 429: "Rate limit",
               503: "Starting, loading, or busy (Retry-After)"}


@dataclass(frozen=True)
class Operation:
    summary: str
    request: type[BaseModel] | None = None
    response: dict = field(default_factory=lambda: {"type": "object"})
    streams: bool = False  # can answer as Server-Sent Events
    headers: tuple[str, ...] = ()
    query: tuple[dict, ...] = ()
    public: bool = False  # answered without a token
    errors: tuple[int, ...] = (400, 401, 403, 415, 429, 503)


def documented(**operation) -> Callable:
    """Mark a handler with what the OpenAPI document says of it."""

    def mark(handler: Callable) -> Callable:
        handler.__openapi__ = Operation(**operation)
        return handler

    return mark


def build_document(app: web.Application, served_models: list[str] | None = None) -> dict:
    """The document for ``app``; ``served_models`` become the examples of every ``model`` field that names
    a chat model (so generated requests reach the models, not just the 404 for an unknown one)."""
    schemas: dict = {"Error": ERROR_SCHEMA}
    paths: dict = {}
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS", "*"):
            continue
        path = route.resource.canonical if route.resource is not None else None
        operation: Operation | None = getattr(route.handler, "__openapi__", None)
        if operation is None:
            raise ValueError(f"{route.method} {path} has no @documented(...): the OpenAPI document would miss it")
        paths.setdefault(path, {})[route.method.lower()] = _operation(operation, route.method, path, schemas)
    for schema in schemas.values():
        model_field = schema.get("properties", {}).get("model")
        if served_models and model_field is not None and "examples" not in model_field:
            model_field["examples"] = list(served_models)
    return {
        "openapi": "3.1.0",
        "info": {"title": "localllm", "version": __version__,
                 "description": "A local-first LLM daemon: OpenAI-compatible API on localhost."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "Needed when the daemon has a token set."}}},
    }


def _operation(operation: Operation, method: str, path: str, schemas: dict) -> dict:
    described: dict = {"summary": operation.summary,
                       "operationId": f"{method.lower()}_{path.strip('/').replace('/', '_').replace('.', '_')}",
                       "security": [{}] if operation.public else [{}, {"bearer": []}]}
    parameters = [HEADER_PARAMETERS[name] for name in operation.headers] + list(operation.query)
    if parameters:
        described["parameters"] = parameters
    if operation.request is not None:
        described["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": _model_schema(operation.request, schemas)}}}
    content = {"application/json": {"schema": operation.response}}
    if operation.streams:
        content["text/event-stream"] = {"schema": {"type": "string"}}
    responses = {"200": {"description": "OK", "content": content}}
    for status in operation.errors:
        responses[str(status)] = {"description": STATUS_TEXT[status], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    described["responses"] = responses
    return described


def _model_schema(model: type[BaseModel], schemas: dict) -> dict:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


@documented(summary="This document: every endpoint, generated from the models requests are validated with.",
            public=True, errors=())
async def openapi_document(request: web.Request) -> web.Response:
    served = [scheduler.model_name for scheduler in request.app[REGISTRY].all()]
    return web.json_response(build_document(request.app, served))


def add_openapi_route(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_document)
