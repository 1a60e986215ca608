"""[engine] and [models."NAME"]: how llama.cpp runs each model."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from localllm.config.section import Section

DEFAULT_MODEL = "smollm2-135m-instruct"


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class EngineSettings(Section):
    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Model served by default (catalog name or file in the models dir).")
    n_ctx: int = Field(2048, ge=128, le=1_048_576,
                       description="Context window per sequence in tokens (one request's prompt and answer).")
    n_parallel: int | Literal["auto"] = Field("auto", description=(
        "Requests generated at once per model, batched into one llama.cpp decode. The KV cache holds "
        "n_ctx x n_parallel tokens; 1 = one request at a time. auto: as many as the cores keep busy "
        "(4 per core, 4 to 16), fewer when the memory budget cannot hold their KV cache; "
        "`localllm status` says the choice."))
    memory_budget_mb: int = Field(0, ge=0, description=(
        "Memory the loaded models may take together, in MiB (weights, KV cache, buffers, estimated from each "
        "GGUF before loading). Idle models are unloaded, least recently used first, to make room. "
        "0 = automatic: 75% of the machine's RAM less 1 GiB."))
    keep_alive: float | int | str = Field("5m", description=(
        "How long a model loaded on demand stays loaded after its last request (Ollama's syntax: \"5m\", "
        "\"1h30m\", \"300s\", seconds as a number, -1 = forever, 0 = unload after each request). "
        "Models loaded at start (model and preload) stay until memory is needed. A request may set its own "
        "(Ollama's keep_alive, or the X-LocalLLM-Keep-Alive header)."))
    preload: list[str] = Field(default_factory=list, description=(
        "Models loaded at start besides `model` (catalog names or files in the models dir); any other "
        "installed model loads on its first request."))
    n_threads: int = Field(0, ge=0, le=512, description="CPU threads for generation; 0 = number of physical cores.")
    n_gpu_layers: int | Literal["all", "auto"] = Field(
        0, description="Layers offloaded to the GPU: 0, N, 'all', or 'auto' (as many as fit the GPU's free "
        "memory with their KV cache; 0 on a CPU build). Needs a CUDA/Metal build of llama-cpp-python.")
    n_batch: int = Field(512, ge=1, le=65536, description=(
        "Most tokens in one decode step (all sequences together): a newcomer's prompt is fed in "
        "chunks of what is left after one token per running sequence, so streams keep flowing."))
    kv_cache_type: Literal["q8_0", "f16-q8_0", "f16"] = Field("q8_0", description=(
        "KV cache precision, keys-values. q8_0 (both: the least memory) and f16-q8_0 (f16 keys, q8_0 "
        "values) keep answers independent of what else is in the batch: llama.cpp's CPU attention then "
        "takes one path for any batch shape. f16 (both) lets long prompts use tiled attention, whose "
        "rounding depends on the batch, so greedy answers can vary under load."))
    prompt_packing: Literal["auto", "all"] = Field("auto", description=(
        "How the prompts of requests that arrive together share decode steps. auto: another "
        "prompt joins a step only when the measured cost of a step says first tokens come out "
        "sooner that way (on a CPU about one prompt per step, so the first request streams after "
        "its own prompt rather than after everyone's; on a GPU many per step). all: every "
        "waiting prompt that fits goes into the next step (llama.cpp server's way)."))
    queue_size: int = Field(16, ge=1, le=10_000, description="Requests waiting for the engine before 503 queue_full.")
    default_max_tokens: int = Field(512, ge=1, description="max_tokens when a request does not set one.")
    watts_per_core: float = Field(10.0, gt=0, le=500, description=(
        "Power of one busy CPU core in watts, for the energy estimate where RAPL cannot be read (a laptop "
        "or desktop core under load draws roughly 5-15 W; an ARM board's 1-3 W). Energy measured by RAPL "
        "does not use it."))

    @field_validator("n_gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in ("all", "auto"):
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be 0, a positive number of layers, 'all' or 'auto'") from None
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0, a positive number of layers, 'all' or 'auto'")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("n_parallel", mode="before")
    @classmethod
    def _parallel(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be a number of sequences (1-256) or 'auto'") from None
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 256:
            raise ValueError("must be a number of sequences (1-256) or 'auto'")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: Any) -> Any:
        duration_seconds(value, "engine.keep_alive")  # raises ValueError with the accepted forms
        return value

    @property
    def keep_alive_s(self) -> float:
        """The keep-alive in seconds; infinity is forever."""
        return duration_seconds(self.keep_alive, "engine.keep_alive")

    @model_validator(mode="after")
    def _batch_holds_every_sequence(self) -> EngineSettings:
        if self.n_parallel != "auto" and self.n_batch < self.n_parallel:
            raise ValueError(f"engine.n_batch ({self.n_batch}) must be at least engine.n_parallel "
                             f"({self.n_parallel}): each decode step carries one token per running sequence")
        return self

    @property
    def threads(self) -> int:
        return self.n_threads or physical_cores()

    @property
    def gpu_layers(self) -> int:
        """llama.cpp's n_gpu_layers (-1: all); "auto" is resolved per model before loading (0 if it was not)."""
        if self.n_gpu_layers == "all":
            return -1
        return 0 if self.n_gpu_layers == "auto" else int(self.n_gpu_layers)


_DURATION_PART = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)?")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration_seconds(value: Any, where: str = "keep_alive") -> float:
    """Ollama's keep-alive as seconds (a number of seconds, or a Go duration like "5m" or "1h30m"); infinity
    for forever (any negative value). Raises ValueError naming ``where`` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{where} must be a duration like \"5m\", a number of seconds, or -1")
    if isinstance(value, str):
        text = value.strip()
        parts = _DURATION_PART.findall(text)
        if not text or "".join(number + unit for number, unit in parts) != text:
            raise ValueError(f"{where} {value!r} is not a duration (like \"5m\", \"1h30m\", \"300s\", or -1)")
        seconds = sum(float(number) * _DURATION_UNITS[unit or None] for number, unit in parts)
    else:
        seconds = float(value)
    return math.inf if seconds < 0 else seconds


class ModelOverride(Section):
    """Per-model engine settings (``[models."NAME"]``); unset fields use ``[engine]``."""

    n_ctx: int | None = Field(None, ge=128, le=1_048_576, description="Context window for this model.")
    n_threads: int | None = Field(None, ge=0, le=512, description="CPU threads for this model.")
    n_gpu_layers: int | Literal["all", "auto"] | None = Field(None, description="GPU layers for this model.")
    n_batch: int | None = Field(None, ge=1, le=65536, description="Batch size for this model.")
    n_parallel: int | Literal["auto"] | None = Field(None, description="Parallel sequences for this model.")
    keep_alive: float | int | str | None = Field(None, description="Keep-alive for this model.")

    @field_validator("n_parallel", mode="before")
    @classmethod
    def _parallel(cls, value: Any) -> Any:
        return None if value is None else EngineSettings._parallel(value)

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: Any) -> Any:
        if value is not None:
            duration_seconds(value, "keep_alive")
        return value
