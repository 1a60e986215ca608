"""The request path, readable as one function per endpoint.

Validation already happened (a typed request comes in); the pipeline picks the
model, builds and measures the prompt, and hands back a stream of events. The
HTTP daemon and the CLI's in-process mode both run this same pipeline. Later
rooms slot in here in order: guard, embed, cache, router, fallback, log.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .engine import Finished, GenerationJob, TextDelta
from .model_registry import ModelRegistry
from .openai_requests import ChatCompletionRequest, CompletionRequest


@dataclass
class Generation:
    """An accepted request: what serves it, and its events once iterated."""

    id: str
    model: str
    route: str
    prompt_tokens: int
    events: AsyncIterator[TextDelta | Finished]
    created: int = field(default_factory=lambda: int(time.time()))
    started_at: float = field(default_factory=time.perf_counter)


class Pipeline:
    def __init__(self, registry: ModelRegistry):
        self.registry = registry

    async def chat(self, request: ChatCompletionRequest) -> Generation:
        scheduler = self.registry.get(request.model)
        prompt_tokens = await scheduler.render_and_tokenize(request.template_messages())
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens)
        job = GenerationJob(prompt_tokens, max_tokens, request.sampling())
        return Generation(f"chatcmpl-{uuid.uuid4().hex}", scheduler.model_name, "local",
                          len(prompt_tokens), scheduler.stream(job))

    async def complete(self, request: CompletionRequest) -> Generation:
        scheduler = self.registry.get(request.model)
        prompt_tokens = await scheduler.tokenize(request.prompt)
        max_tokens = scheduler.engine.check_fits(len(prompt_tokens), request.max_tokens)
        job = GenerationJob(prompt_tokens, max_tokens, request.sampling())
        return Generation(f"cmpl-{uuid.uuid4().hex}", scheduler.model_name, "local",
                          len(prompt_tokens), scheduler.stream(job))
