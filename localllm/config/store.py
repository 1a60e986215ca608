"""[store] and [cache]: the request log and the semantic cache."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from localllm.config.section import Section


class StoreSettings(Section):
    log_prompts: bool = Field(False, description="Keep prompt and answer text in the request log (off: only a hash).")


class CacheSettings(Section):
    enabled: bool = Field(True, description="Answer repeated and paraphrased questions from the semantic cache.")
    embedder: Literal["auto", "sentence-transformers", "onnx"] = Field(
        "auto", description="Embedding backend: onnx (int8, no PyTorch), sentence-transformers (PyTorch), "
        "auto = onnx when installed (faster, and PyTorch in the daemon slows llama.cpp down), else "
        "sentence-transformers.")
    embedder_threads: int = Field(
        0, ge=0, le=512, description="CPU threads for embedding prompts; a number fixes it for either backend. "
        "0 = automatic (onnx backend): all physical cores while no model is generating, one while one is, "
        "so the embedder's threads do not "
        "fight llama.cpp's for the cores (a 2-thread embedder beside a 2-thread decode on 2 cores cut decoding "
        "from 88 to 31 tokens/s; one thread: 62).")
    max_wrong_hit_share: float = Field(
        0.08, ge=0.01, le=0.5, description="How often a semantic hit may be a different question, as measured out "
        "of fold on Quora's labelled pairs: the verifier's operating point (the strictest shipped point at or "
        "under it: 0.05, 0.08, 0.10, 0.15; below 0.05, 0.05, the strictest the labels can judge). Higher serves "
        "more paraphrases from the cache (about 6%, 19%, 30%, 49%) and more wrong answers; BENCHMARKS.md has "
        "the curve. Exact repeats always hit.")
    ttl_s: float = Field(7 * 24 * 3600, gt=0, description="Seconds a cached answer stays valid.")
    max_entries: int = Field(100_000, ge=1, description="Entries kept; the least recently used go first.")
    allow_nondeterministic: bool = Field(
        False, description="Also cache answers sampled with temperature > 0 and no seed.")
