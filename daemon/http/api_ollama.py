"""Ollama's API on the same daemon, port, token and Host rules: chat, generate, embeddings, the model
endpoints (tags, show, ps, pull, delete, copy), version, and the root probe. Requests go through the
same pipeline as the OpenAI endpoints; answers stream as NDJSON, as Ollama's do."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import time
from contextlib import aclosing

from aiohttp import web

from localllm.daemon.http import ollama_shapes as shapes
from localllm.daemon.http.api_openai import read_json
from localllm.daemon.http.api_store import embed_texts
from localllm.daemon.http.app_keys import REGISTRY, SETTINGS, runtime_of
from localllm.daemon.http.ollama_requests import (
    OllamaChatRequest,
    OllamaCopyRequest,
    OllamaEmbeddingsRequest,
    OllamaEmbedRequest,
    OllamaGenerateRequest,
    OllamaModelRequest,
    chat_request,
    generate_request,
    keep_alive_seconds,
    model_name,
)
from localllm.daemon.http.openapi import documented
from localllm.daemon.http.request_context import context_from_headers
from localllm.daemon.http.security import TOKEN_NAMESPACE
from localllm.daemon.models.catalog import entry_for_filename
from localllm.daemon.models.gguf_info import read_gguf_info
from localllm.daemon.models.model_files import ModelFiles
from localllm.daemon.models.pull_sources import plan_pull
from localllm.daemon.models.puller import pull
from localllm.daemon.requests import ChatCompletionRequest, parse_request
from localllm.errors import InvalidRequest, LocalLLMError, ModelNotFound
from localllm.file_digest import sha256_of_file
from localllm.store.embedder import MODEL_ID
from localllm.vocabulary import AnswerText, RequestContext, TextDelta, ToolCall

log = logging.getLogger(__name__)

# The Ollama API these endpoints follow; clients read it to know what they may send.
OLLAMA_API_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"
ERRORS = (400, 401, 403, 404, 413, 415, 429, 503)


def _limits(request: web.Request, name: str) -> tuple[int, int]:
    """(context per request, default max tokens) of the local model ``name``; generous for others (an
    upstream, or a name the pipeline will refuse with its own error)."""
    try:
        settings = request.app[REGISTRY].get(model_name(name)).engine.settings
    except ModelNotFound:
        return 1 << 30, request.app[SETTINGS].engine.default_max_tokens
    return settings.n_ctx, settings.default_max_tokens


# -- generation ------------------------------------------------------------------------------------


@documented(summary="Ollama: a chat answer, streamed as NDJSON unless stream is false.", request=OllamaChatRequest,
            errors=ERRORS)
async def chat(request: web.Request) -> web.StreamResponse:
    body = parse_request(OllamaChatRequest, await read_json(request))
    pipeline = runtime_of(request).pipeline
    converted = chat_request(body, _limits(request, body.model)[0])
    ctx = _context(request, body.keep_alive)
    timing = shapes.Timing()
    gen = await pipeline.chat(converted, ctx)
    return await _answer(request, gen, timing, chat=True, stream=body.stream)


@documented(summary="Ollama: a completion of a prompt (a one-turn chat, or raw), NDJSON unless stream is false.",
            request=OllamaGenerateRequest, errors=ERRORS)
async def generate(request: web.Request) -> web.StreamResponse:
    body = parse_request(OllamaGenerateRequest, await read_json(request))
    runtime = runtime_of(request)
    ctx = _context(request, body.keep_alive)
    if not body.prompt and not body.system:
        # Ollama's way to load a model, or with keep_alive 0 to unload it: nothing to generate.
        registry = runtime.registry
        scheduler = registry.get(model_name(body.model))
        if ctx.keep_alive_s == 0:
            await registry.unload_when_idle(scheduler, "asked to unload (keep_alive 0)")
            reason = "unload"
        else:
            (await registry.acquire(scheduler, ctx.keep_alive_s)).release()
            reason = "load"
        return web.json_response({"model": shapes.ollama_name(model_name(body.model)), "created_at": shapes.now_iso(),
                                  "response": "", "done": True, "done_reason": reason})
    converted = generate_request(body, *_limits(request, body.model))
    timing = shapes.Timing()
    if isinstance(converted, ChatCompletionRequest):
        gen = await runtime.pipeline.chat(converted, ctx)
    else:
        gen = await runtime.pipeline.complete(converted, ctx)
    return await _answer(request, gen, timing, chat=False, stream=body.stream)


def _context(request: web.Request, keep_alive: object) -> RequestContext:
    """The request's context from its headers, with Ollama's keep_alive from its body."""
    ctx = context_from_headers(request.headers, request.get(TOKEN_NAMESPACE))
    seconds = keep_alive_seconds(keep_alive)
    if seconds is not None:
        ctx.keep_alive_s = seconds
    return ctx


async def _answer(request: web.Request, gen, timing: shapes.Timing, *, chat: bool, stream: bool
                  ) -> web.StreamResponse:
    if not stream:
        async with aclosing(gen.events) as events:
            answer = AnswerText()
            async for event in events:
                if isinstance(event, TextDelta):
                    timing.saw_token()
                answer.add(event)
        done = shapes.chat_done if chat else shapes.generate_done
        return web.json_response(done(gen, answer, timing))
    events = gen.events.__aiter__()
    first = await anext(events, None)  # errors before the first event are still HTTP errors
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    lines = shapes.OllamaLines(gen, timing, chat=chat)
    try:
        event = first
        while event is not None:
            if isinstance(event, TextDelta):
                chunk = lines.text(event.text)
            elif isinstance(event, ToolCall):
                chunk = lines.tool_call(event)
            else:
                chunk = lines.finished(event)
            for line in chunk:
                await response.write(json.dumps(line, ensure_ascii=False).encode() + b"\n")
            event = await anext(events, None)
    except LocalLLMError as exc:
        log.warning("stream failed after it started: %s", exc.__class__.__name__)
        await response.write(json.dumps({"error": exc.message}).encode() + b"\n")
    except (ConnectionResetError, ConnectionError):
        log.debug("client disconnected mid-stream; generation cancelled")
    finally:
        await events.aclose()
    await response.write_eof()
    return response


# -- embeddings ------------------------------------------------------------------------------------


@documented(summary="Ollama: embeddings of one or more inputs.", request=OllamaEmbedRequest, errors=ERRORS)
async def embed(request: web.Request) -> web.Response:
    body = parse_request(OllamaEmbedRequest, await read_json(request))
    keep_alive = keep_alive_seconds(body.keep_alive)
    timing = shapes.Timing()
    texts = [body.input] if isinstance(body.input, str) else body.input
    vectors, tokens, model = await embed_texts(request, body.model, texts, body.dimensions, keep_alive_s=keep_alive)
    return web.json_response({"model": shapes.ollama_name(model), "embeddings": [v.tolist() for v in vectors],
                              "total_duration": timing.elapsed_ns(), "load_duration": 0, "prompt_eval_count": tokens})


@documented(summary="Ollama (older): the embedding of one prompt.", request=OllamaEmbeddingsRequest, errors=ERRORS)
async def embeddings(request: web.Request) -> web.Response:
    body = parse_request(OllamaEmbeddingsRequest, await read_json(request))
    vectors, _, _ = await embed_texts(request, body.model, [body.prompt],
                                      keep_alive_s=keep_alive_seconds(body.keep_alive))
    return web.json_response({"embedding": vectors[0].tolist()})


# -- models ----------------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, float], str] = {}


def _digest(path) -> str:
    """The file's sha256: the catalog's for a catalog model (pulls verify it), else read once and remembered
    while the file's size and modification time stay the same."""
    entry = entry_for_filename(path.name)
    if entry is not None:
        return entry.sha256
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of_file(path)
    return _DIGESTS[key]


def _describe_file(model) -> dict:
    try:
        info = read_gguf_info(model.path)
    except LocalLLMError:
        info = None
    name = shapes.ollama_name(model.catalog_name or model.path.stem)
    return {"name": name, "model": name, "modified_at": shapes.iso_time(model.path.stat().st_mtime),
            "size": model.size_bytes, "digest": _digest(model.path), "details": shapes.model_details(info)}


def _files(request: web.Request) -> ModelFiles:
    return ModelFiles(request.app[SETTINGS].resolved_models_dir)


@documented(summary="Ollama: the models installed in the models directory.", errors=(401, 403, 429))
async def tags(request: web.Request) -> web.Response:
    files = _files(request)
    models = await asyncio.get_running_loop().run_in_executor(
        None, lambda: [_describe_file(model) for model in files.list()])
    return web.json_response({"models": models})


@documented(summary="Ollama: what is known of one installed model.", request=OllamaModelRequest, errors=ERRORS)
async def show(request: web.Request) -> web.Response:
    body = parse_request(OllamaModelRequest, await read_json(request))

    def describe() -> dict:
        path = _files(request).resolve(body.target)
        info = read_gguf_info(path)
        template = _template(path)
        capabilities = ["completion", "tools"] + (["embedding"] if body.target == MODEL_ID else [])
        return {"modelfile": f"# localllm serves the file as it is\nFROM {path}\n", "parameters": "",
                "template": template, "details": shapes.model_details(info), "model_info": shapes.model_info(info),
                "capabilities": capabilities, "modified_at": shapes.iso_time(path.stat().st_mtime)}

    return web.json_response(await asyncio.get_running_loop().run_in_executor(None, describe))


def _template(path) -> str:
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    return bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field is not None else ""


@documented(summary="Ollama: the models loaded now.", errors=(401, 403, 429, 503))
async def ps(request: web.Request) -> web.Response:
    registry = runtime_of(request).registry
    loop = asyncio.get_running_loop()
    loaded = []
    for scheduler in registry.all():
        if scheduler.state not in ("loading", "ready"):
            continue
        described = registry.describe(scheduler)
        engine = scheduler.engine
        name = shapes.ollama_name(scheduler.model_name)
        expires = described["expires_in_s"]
        try:
            digest = await loop.run_in_executor(None, _digest, engine.path)
        except OSError:  # its file was deleted while it was loaded
            digest = ""
        loaded.append({"name": name, "model": name, "size": described["size"], "size_vram": described["size_vram"],
                       "digest": digest,
                       "details": shapes.model_details(registry.header(scheduler)),
                       # Ollama shows a model that never expires with a far-off date.
                       "expires_at": shapes.iso_time(time.time() + expires) if expires is not None
                       else "2318-01-01T00:00:00Z",
                       "context_length": described["context_length"],
                       "localllm": {key: described[key] for key in (
                           "state", "in_flight", "parallel", "parallel_source", "footprint", "load_seconds", "loads",
                           "preloaded")}})
    return web.json_response({"models": loaded})


@documented(summary="Ollama: pull a model (catalog name, hf:, https URL), progress as NDJSON.",
            request=OllamaModelRequest, errors=ERRORS)
async def pull_model(request: web.Request) -> web.StreamResponse:
    body = parse_request(OllamaModelRequest, await read_json(request))
    loop = asyncio.get_running_loop()
    progress: asyncio.Queue = asyncio.Queue()

    def report(done: int, total: int | None) -> None:
        loop.call_soon_threadsafe(progress.put_nowait, (done, total))

    models_dir = request.app[SETTINGS].resolved_models_dir
    expected = plan_pull(body.target).sha256  # an unpullable name is a 400 before anything streams
    job = loop.run_in_executor(None, functools.partial(pull, body.target, models_dir, progress=report))
    if not body.stream:
        await job
        return web.json_response({"status": "success"})
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)

    async def line(payload: dict) -> None:
        await response.write(json.dumps(payload).encode() + b"\n")

    await line({"status": "pulling manifest"})
    known = {"digest": f"sha256:{expected}"} if expected else {}  # the digest only when it is known now
    while not job.done():
        waiter = asyncio.ensure_future(progress.get())
        await asyncio.wait({waiter, job}, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            done, total = waiter.result()
            await line({"status": f"pulling {body.target}", **known, "total": total or done, "completed": done})
        else:
            waiter.cancel()
    try:
        result = job.result()
    except LocalLLMError as exc:
        await line({"error": exc.message})
    else:
        await line({"status": f"pulling {result.sha256[:12]}", "digest": f"sha256:{result.sha256}",
                    "total": result.size, "completed": result.size})
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            await line({"status": status})
    await response.write_eof()
    return response


@documented(summary="Ollama: delete an installed model that is not being served.", request=OllamaModelRequest,
            errors=ERRORS)
async def delete(request: web.Request) -> web.Response:
    body = parse_request(OllamaModelRequest, await read_json(request))
    files = _files(request)
    path = files.resolve(body.target)
    registry = runtime_of(request).registry
    for scheduler in registry.all():
        if scheduler.engine.path.resolve() == path.resolve() and scheduler.state in ("loading", "ready"):
            await registry.unload(scheduler, "its file is being deleted")  # refused while it answers
    await asyncio.get_running_loop().run_in_executor(None, files.remove, body.target)
    return web.Response(status=200)


@documented(summary="Ollama: copy an installed model under another name.", request=OllamaCopyRequest,
            errors=ERRORS)
async def copy(request: web.Request) -> web.Response:
    body = parse_request(OllamaCopyRequest, await read_json(request))
    files = _files(request)
    source = files.resolve(model_name(body.source))
    target = files.path_for(model_name(body.destination) + ".gguf")
    if target.exists():
        raise InvalidRequest(f"A model named {body.destination} exists already.", param="destination")

    def link_or_copy() -> None:
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)

    await asyncio.get_running_loop().run_in_executor(None, link_or_copy)
    return web.Response(status=200)


@documented(summary="Ollama: the API version these endpoints follow.", errors=(401, 403, 429))
async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": OLLAMA_API_VERSION})


@documented(summary="The probe Ollama clients send: is a server there?", public=True, errors=(403,))
async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


def add_ollama_routes(app: web.Application) -> None:
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/show", show)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/pull", pull_model)
    app.router.add_delete("/api/delete", delete)
    app.router.add_post("/api/copy", copy)
    app.router.add_get("/api/version", version)
    app.router.add_get("/", root)  # GET also answers HEAD
