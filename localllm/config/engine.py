"""[engine] and [models."NAME"]: how llama.cpp runs each model."""

from __future__ import annotations

import os
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
    n_parallel: int = Field(4, ge=1, le=256, description=(
        "Requests generated at once, batched into one llama.cpp decode. The KV cache holds "
        "n_ctx x n_parallel tokens; 1 = one request at a time."))
    n_threads: int = Field(0, ge=0, le=512, description="CPU threads for generation; 0 = number of physical cores.")
    n_gpu_layers: int | Literal["all"] = Field(
        0, description="Layers offloaded to the GPU: 0, N or 'all'. Needs a CUDA/Metal build of llama-cpp-python.")
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

    @field_validator("n_gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "all":
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be 0, a positive number of layers, or 'all'") from None
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0, a positive number of layers, or 'all'")
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batch_holds_every_sequence(self) -> EngineSettings:
        if self.n_batch < self.n_parallel:
            raise ValueError(f"engine.n_batch ({self.n_batch}) must be at least engine.n_parallel "
                             f"({self.n_parallel}): each decode step carries one token per running sequence")
        return self

    @property
    def threads(self) -> int:
        return self.n_threads or physical_cores()

    @property
    def gpu_layers(self) -> int:
        return -1 if self.n_gpu_layers == "all" else int(self.n_gpu_layers)


class ModelOverride(Section):
    """Per-model engine settings (``[models."NAME"]``); unset fields use ``[engine]``."""

    n_ctx: int | None = Field(None, ge=128, le=1_048_576, description="Context window for this model.")
    n_threads: int | None = Field(None, ge=0, le=512, description="CPU threads for this model.")
    n_gpu_layers: int | Literal["all"] | None = Field(None, description="GPU layers for this model.")
    n_batch: int | None = Field(None, ge=1, le=65536, description="Batch size for this model.")
    n_parallel: int | None = Field(None, ge=1, le=256, description="Parallel sequences for this model.")
