"""Embeddings from a chat model (Ollama clients send a chat model's name to /api/embed).

A second llama.cpp context on the loaded model's weights, made on the first embedding request:
embeddings on, mean pooling over the text's tokens, one text at a time, vectors L2-normalised (as
Ollama returns them). It is freed with the model.
"""

from __future__ import annotations

import threading

import numpy as np

from localllm.errors import InvalidRequest


class ModelEmbedder:
    def __init__(self, engine):
        self.engine = engine
        self._context = None
        self._batch = None
        self._lock = threading.Lock()  # one context: one text at a time

    def embed(self, texts: list[str]) -> tuple[list[np.ndarray], int]:
        """(one unit vector per text, tokens read). Blocking: call from a worker thread."""
        import llama_cpp

        with self._lock:
            self._open()
            vectors, total = [], 0
            n_embd = self.engine.model.n_embd()
            for index, text in enumerate(texts):
                tokens = self.engine.tokenize(text) or [self.engine.model.token_bos()]
                if len(tokens) > self.engine.n_ctx:
                    raise InvalidRequest(f"input[{index}] is {len(tokens)} tokens, more than the "
                                         f"{self.engine.n_ctx} model {self.engine.name!r} embeds at once.",
                                         param="input")
                total += len(tokens)
                self._context.kv_cache_clear()
                self._batch.set_batch(tokens, n_past=0, logits_all=True)
                self._context.decode(self._batch)
                pointer = llama_cpp.llama_get_embeddings_seq(self._context.ctx, 0)
                vector = np.ctypeslib.as_array(pointer, shape=(n_embd,)).astype(np.float32)
                norm = float(np.linalg.norm(vector))
                vectors.append(vector / norm if norm > 0 else vector)
            return vectors, total

    def _open(self) -> None:
        if self._context is not None:
            return
        import llama_cpp
        from llama_cpp import _internals

        settings = self.engine.settings
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = settings.n_ctx
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        params.n_threads = params.n_threads_batch = settings.threads
        params.no_perf = True
        self._context = _internals.LlamaContext(model=self.engine.model, params=params, verbose=False)
        self._batch = _internals.LlamaBatch(n_tokens=settings.n_ctx, embd=0, n_seq_max=1, verbose=False)

    def close(self) -> None:
        with self._lock:
            if self._batch is not None:
                self._batch.close()
            if self._context is not None:
                self._context.close()
            self._context = self._batch = None
