"""Endpoints backed by the store: OpenAI-shaped embeddings, and clearing the cache."""

from __future__ import annotations

import asyncio
import base64
import functools
from typing import Literal

from aiohttp import web
from pydantic import Field

from localllm.daemon.http.api_openai import read_json
from localllm.daemon.http.app_keys import runtime_of
from localllm.daemon.http.openapi import documented
from localllm.daemon.http.request_context import context_from_headers
from localllm.daemon.http.security import TOKEN_NAMESPACE
from localllm.daemon.requests import _Body, parse_request
from localllm.errors import InvalidRequest, ModelNotFound, NotFound
from localllm.store.embedder import MODEL_ID

MAX_INPUTS = 2048


class EmbeddingsRequest(_Body):
    model: str = Field(min_length=1, examples=[MODEL_ID])
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)


async def embed_texts(request: web.Request, model: str, texts: list[str], dimensions: int | None = None, *,
                      keep_alive_s: float | None = None) -> tuple[list, int, str]:
    """(the vectors, the tokens read, the model's name) for ``texts``: with the served sentence embedder
    when ``model`` names it (with or without an Ollama tag), else with the chat model it names (its own
    hidden states, mean-pooled; Ollama clients do that). The OpenAI and Ollama endpoints both embed here."""
    runtime = runtime_of(request)
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"At most {MAX_INPUTS} inputs per request; got {len(texts)}.", param="input")
    embedder = runtime.services.embedder
    loop = asyncio.get_running_loop()
    if model.lower().removesuffix(":latest") not in {MODEL_ID.lower(), *([embedder.name.lower()] if embedder else [])}:
        keep_alive_s = keep_alive_s if keep_alive_s is not None else context_from_headers(
            request.headers, request.get(TOKEN_NAMESPACE)).keep_alive_s
        return (*await _embed_with_chat_model(runtime, model, texts, dimensions, keep_alive_s, loop), model)
    if embedder is None:
        raise ModelNotFound(f"No sentence embedder is served here: {MODEL_ID} comes with the semantic cache or the "
                            "router (cache.enabled = true or router.enabled = true). A chat model's name works "
                            "too.", param="model")
    _check_dimensions(dimensions, embedder.dimensions, MODEL_ID)
    embed = functools.partial(embedder.embed, texts, cores_busy=runtime.registry.generating)
    vectors = await loop.run_in_executor(None, embed)
    tokens = await loop.run_in_executor(None, embedder.count_tokens, texts)
    return vectors, tokens, MODEL_ID


async def _embed_with_chat_model(runtime, model: str, texts: list[str], dimensions: int | None,
                                 keep_alive_s: float | None, loop):
    try:
        scheduler = runtime.registry.get(model)
    except ModelNotFound as exc:
        raise ModelNotFound(f"{exc.message} Embeddings come from '{MODEL_ID}' or from any installed model.",
                            param="model") from None
    lease = await runtime.registry.acquire(scheduler, keep_alive_s)
    try:
        _check_dimensions(dimensions, scheduler.engine.model.n_embd(), scheduler.model_name)
        return await loop.run_in_executor(None, scheduler.engine.embedder.embed, texts)
    finally:
        lease.release()


def _check_dimensions(asked: int | None, given: int, model: str) -> None:
    if asked is not None and asked != given:
        raise InvalidRequest(f"{model} gives {given}-dimensional vectors and cannot shorten them; leave out "
                             f"`dimensions` or set it to {given}.", param="dimensions")


@documented(summary="Embeddings, OpenAI's shape: all-MiniLM-L6-v2 (384 dimensions), or any installed chat "
            "model's (mean-pooled).",
            request=EmbeddingsRequest, errors=(400, 401, 403, 404, 413, 415, 429, 503))
async def embeddings(request: web.Request) -> web.Response:
    body = parse_request(EmbeddingsRequest, await read_json(request))
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors, tokens, model = await embed_texts(request, body.model, texts, body.dimensions)
    data = []
    for i, vector in enumerate(vectors):
        value = (base64.b64encode(vector.astype("<f4").tobytes()).decode() if body.encoding_format == "base64"
                 else vector.tolist())
        data.append({"object": "embedding", "index": i, "embedding": value})
    return web.json_response({"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


@documented(summary="Empty the caller's cache namespace (X-LocalLLM-Namespace), optionally for one model.",
            headers=("namespace",), errors=(400, 401, 403, 404, 429, 503),
            query=({"name": "model", "in": "query", "required": False, "schema": {"type": "string"}},))
async def clear_cache(request: web.Request) -> web.Response:
    """DELETE /v1/localllm/cache: empty the caller's namespace (X-LocalLLM-Namespace), optionally one model."""
    services = runtime_of(request).services
    if services.cache is None:
        raise NotFound("The semantic cache is off here (cache.enabled = false): there is nothing to clear.",
                       code="cache_disabled")
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    model = request.query.get("model") or None
    removed = await services.cache.clear(namespace=ctx.namespace, model=model)
    return web.json_response({"namespace": ctx.namespace, "model": model, "removed": removed})


def add_store_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_delete("/v1/localllm/cache", clear_cache)
