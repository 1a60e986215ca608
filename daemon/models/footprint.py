"""How much memory a model takes once loaded, estimated from its GGUF header before loading it.

weights: the tensor data (mapped from the file, all of it resident once the model has answered);
KV cache: ``n_ctx`` cells per sequence, ``n_parallel`` sequences, each cell holding every layer's keys
and values at the cache's precision (Gemma 3's sliding-window layers included: llama.cpp keeps them
full-size so that cached prefixes can be reused); and the rest: llama.cpp's vocabulary tables, compute
and logits buffers, which grow with the vocabulary. The constants of the rest were fitted to RSS
measured on SmolLM2-135M and Gemma-3-270M at 1-8 sequences, 2k-8k context, q8_0 and f16 caches
(bench/footprint_accuracy.py checks the estimate against measured RSS).
"""

from __future__ import annotations

from dataclasses import dataclass

from localllm.daemon.models.gguf_info import GGUFInfo

MiB = 1 << 20
_BYTES_PER_ELEMENT = {"q8_0": 34 / 32, "f16": 2.0}  # q8_0: blocks of 32 values in 34 bytes
_CELL_PADDING = 256  # llama.cpp rounds each sequence's KV cells up to a multiple of this
_BASE_OVERHEAD = 28 * MiB  # the runtime's own buffers, whatever the model
_PER_VOCAB_ENTRY = 200  # bytes per vocabulary entry: token tables, sampler and output buffers


@dataclass(frozen=True)
class Footprint:
    weights: int
    kv_cache: int
    other: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.other

    def describe(self) -> str:
        return (f"{self.total / MiB:.0f} MiB (weights {self.weights / MiB:.0f}, KV cache {self.kv_cache / MiB:.0f}, "
                f"buffers {self.other / MiB:.0f})")


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, n_parallel: int, kv_cache_type: str) -> int:
    """The KV cache of ``n_parallel`` sequences of ``n_ctx`` tokens; 0 when the header lacks the shape."""
    shape = info.shape
    if shape is None:
        return 0
    key_type, _, value_type = kv_cache_type.partition("-")
    per_cell = shape.n_layer * shape.n_head_kv * (shape.key_length * _BYTES_PER_ELEMENT[key_type]
                                                  + shape.value_length * _BYTES_PER_ELEMENT[value_type or key_type])
    cells = -(-n_ctx // _CELL_PADDING) * _CELL_PADDING * n_parallel
    return int(per_cell * cells)


def estimate_footprint(info: GGUFInfo, *, n_ctx: int, n_parallel: int, kv_cache_type: str) -> Footprint:
    vocab = info.shape.n_vocab if info.shape is not None else 32_000
    return Footprint(weights=info.tensor_bytes,
                     kv_cache=kv_cache_bytes(info, n_ctx, n_parallel, kv_cache_type),
                     other=_BASE_OVERHEAD + _PER_VOCAB_ENTRY * vocab + 4 * vocab * n_parallel)
