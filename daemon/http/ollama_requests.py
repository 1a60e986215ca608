"""Ollama's request bodies, validated, and turned into the daemon's own typed requests.

An /api/chat body becomes a ChatCompletionRequest (so it is checked, decided and
answered exactly as /v1/chat/completions is), an /api/generate body a completion
or a one-turn chat. Ollama's ``options`` map onto the sampling fields; options
that tune only how Ollama runs a model (threads, GPU layers, mmap...) change
nothing here and are accepted; unknown ones and features not served (images,
template overrides, thinking) are a 400 that names them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from localllm.config.engine import duration_seconds
from localllm.daemon.requests import ChatCompletionRequest, CompletionRequest, _Body, parse_request
from localllm.errors import InvalidRequest

# Options that map onto a sampling field of the OpenAI request.
SAMPLING_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
                    "seed": "seed", "stop": "stop", "repeat_penalty": "repeat_penalty",
                    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
# Options about how Ollama loads and runs a model: the daemon's own settings decide those.
RUNTIME_OPTIONS = frozenset({"numa", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
                             "vocab_only", "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep",
                             "repeat_last_n", "penalize_newline", "typical_p", "tfs_z"})
def keep_alive_seconds(value: object) -> float | None:
    """Ollama's keep_alive in seconds (a number of seconds or a Go duration like "5m"; negative: forever, as
    infinity), or None when the request leaves it out."""
    if value is None or value == "":
        return None
    try:
        return duration_seconds(value)
    except ValueError as exc:
        raise InvalidRequest(f"{exc}.", param="keep_alive") from None


def model_name(name: str) -> str:
    """Ollama names carry a tag; ``:latest`` is the only one a local file has."""
    return name[: -len(":latest")] if name.endswith(":latest") else name


class OllamaToolFunction(_Body):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(_Body):
    function: OllamaToolFunction


class OllamaMessage(_Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class _OllamaGeneration(_Body):
    model: str = Field(min_length=1)
    stream: bool = True
    options: dict[str, Any] | None = None
    format: Literal["", "json"] | dict | None = None
    keep_alive: float | int | str | None = None
    think: bool | str | None = None
    logprobs: bool | None = None


class OllamaChatRequest(_OllamaGeneration):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class OllamaGenerateRequest(_OllamaGeneration):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class OllamaEmbedRequest(_Body):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | int | str | None = None
    dimensions: int | None = Field(None, ge=1)


class OllamaEmbeddingsRequest(_Body):
    model: str = Field(min_length=1)
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | int | str | None = None


class OllamaModelRequest(_Body):
    """/api/show, /api/delete and /api/pull: the model by ``model`` (or the older ``name``)."""

    model: str | None = None
    name: str | None = None
    stream: bool = True
    insecure: bool = False

    @property
    def target(self) -> str:
        chosen = self.model or self.name
        if not chosen:
            raise InvalidRequest("Name the model: {\"model\": \"NAME\"}.", param="model")
        return model_name(chosen)


class OllamaCopyRequest(_Body):
    source: str = Field(min_length=1)
    destination: str = Field(min_length=1)


def _common(request: _OllamaGeneration, n_ctx: int) -> dict:
    """The OpenAI fields that Ollama's options, format and flags map onto."""
    if request.think not in (None, False, "", "false"):
        raise InvalidRequest("Thinking (think) is not supported by the models served here; leave it out.",
                             param="think")
    if request.logprobs:
        raise InvalidRequest("logprobs are not supported yet; leave them out.", param="logprobs")
    fields: dict[str, Any] = {"model": model_name(request.model), "stream": False}
    for option, value in (request.options or {}).items():
        if option in SAMPLING_OPTIONS:
            fields[SAMPLING_OPTIONS[option]] = value
        elif option == "num_predict":
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                fields["max_tokens"] = value  # -1 (no limit) and -2 (fill the context): the daemon's default
        elif option == "num_ctx":
            if not isinstance(value, int) or isinstance(value, bool) or value > n_ctx:
                raise InvalidRequest(f"options.num_ctx {value!r} is more than this model's context of {n_ctx} "
                                     "tokens per request; raise engine.n_ctx (or models.NAME.n_ctx) in the "
                                     "config instead.", param="options.num_ctx")
        elif option in ("mirostat", "mirostat_tau", "mirostat_eta"):
            if option == "mirostat" and value not in (0, None):
                raise InvalidRequest("Mirostat sampling is not supported; use temperature, top_k, top_p and "
                                     "min_p.", param="options.mirostat")
        elif option not in RUNTIME_OPTIONS:
            raise InvalidRequest(f"Unknown option {option!r}.", param=f"options.{option}")
    if request.format == "json":
        fields["response_format"] = {"type": "json_object"}
    elif isinstance(request.format, dict):
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "format",
                                                                            "schema": request.format}}
    return fields


def chat_request(request: OllamaChatRequest, n_ctx: int) -> ChatCompletionRequest:
    if not request.messages:
        raise InvalidRequest("Send at least one message.", param="messages")
    messages, unanswered = [], []
    for index, message in enumerate(request.messages):
        if message.images:
            raise InvalidRequest("Images are not supported by the models served here.",
                                 param=f"messages[{index}].images")
        converted: dict[str, Any] = {"role": message.role, "content": message.content or ""}
        if message.tool_calls:
            calls = []
            for number, call in enumerate(message.tool_calls):
                call_id = f"call_{index}_{number}"
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": call.function.name, "arguments": json.dumps(call.function.arguments)}})
                unanswered.append((call_id, call.function.name))
            converted["tool_calls"] = calls
        if message.role == "tool":
            # Ollama names the function (tool_name), not the call: answer the oldest open call of that name.
            match = next((c for c in unanswered if message.tool_name in (None, c[1])), None)
            if match is None:
                raise InvalidRequest(f"messages[{index}] is a tool result, but no earlier assistant message made "
                                     "a call it could answer.", param=f"messages[{index}]")
            unanswered.remove(match)
            converted["tool_call_id"] = match[0]
        messages.append(converted)
    body = {**_common(request, n_ctx), "messages": messages}
    if request.tools:
        body["tools"] = request.tools
    return parse_request(ChatCompletionRequest, body)


def generate_request(request: OllamaGenerateRequest, n_ctx: int, default_max_tokens: int
                     ) -> ChatCompletionRequest | CompletionRequest:
    for field, why in (("images", "Images are not supported by the models served here."),
                       ("template", "Template overrides are not supported: the model's own chat template is "
                                    "used. Send raw: true with a prompt you formatted yourself instead."),
                       ("suffix", "Fill-in-the-middle (suffix) is not supported."),
                       ("context", "context (token ids of an earlier answer) is not supported; send the "
                                   "conversation to /api/chat instead.")):
        if getattr(request, field):
            raise InvalidRequest(why, param=field)
    fields = _common(request, n_ctx)
    if request.raw:
        if request.system:
            raise InvalidRequest("A system prompt cannot be combined with raw: true.", param="system")
        # Ollama's raw prompts have no 16-token default, unlike OpenAI's completions.
        return parse_request(CompletionRequest, {**fields, "prompt": request.prompt,
                                                 "max_tokens": fields.get("max_tokens", default_max_tokens)})
    messages = ([{"role": "system", "content": request.system}] if request.system else []) + [
        {"role": "user", "content": request.prompt}]
    return parse_request(ChatCompletionRequest, {**fields, "messages": messages})
