"""Reads a cached question and a new one together, for the duplicate verifier.

The verifier's hand-built features see which words differ; they cannot see that "How do I get
rid of acne?" and "What is the best acne treatment?" ask the same thing, or that two questions
sharing every content word ask different ones. A cross-encoder can: both questions go through one
small transformer at once ("[CLS] cached [SEP] new [SEP]"), so every word of one attends to every
word of the other, and one log-odds comes out. It is all-MiniLM-L6-v2 (the embedder's own weights,
Apache-2.0) fine-tuned on the Quora pairs and generated near-misses by
``bench/train_cache_cross_encoder.py``, exported to int8 ONNX (22 MiB, about 8 ms a pair read both
ways on one core), and run here with the embedder's tokenizer. Its log-odds is one more feature of the
verifier's trees, which were trained on its out-of-fold log-odds (stacking), so the trees decide
how far to trust it beside the decisive-token flags.

Each pair is read both ways round in one batch of two rows, and the two log-odds are averaged: the
model reads "A then B" a little differently from "B then A", and either question may be the cached
one. The two rows hold the same tokens, so they need no padding. Pairs are never batched with each
other: int8 activations are quantized per batch, so padding a short pair to a long one would move its
score (by up to 0.4 in log-odds), and a candidate's score must not depend on its neighbours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localllm.file_digest import sha256_of_file
from localllm.store.embedder import TOKENIZER_FILE

MAX_PAIR_TOKENS = 128  # two questions; longer pairs are cut from the longer one's end


class PairCrossEncoder:
    """One int8 ONNX session; ``threads`` intra-op threads (1 by default: lookups run beside llama.cpp's
    decode, whose threads fill the cores, and a spinning second thread slows it more than it helps)."""

    def __init__(self, model_file: Path, *, sha256: str | None = None, threads: int = 1,
                 tokenizer_file: Path = TOKENIZER_FILE):
        import onnxruntime
        from tokenizers import Tokenizer

        if not model_file.is_file():
            raise ValueError(f"the cache's cross-encoder {model_file} is missing: reinstall localllm")
        if sha256 is not None and sha256_of_file(model_file) != sha256:
            raise ValueError(f"the cache's cross-encoder {model_file} does not match its sha256 (a partial copy or "
                             "another model): reinstall localllm, or retrain with bench/train_cache_verifier.py")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(MAX_PAIR_TOKENS, strategy="longest_first")
        self._tokenizer.enable_padding()
        self.pairs_read = 0  # for benchmarks and tests: how often the verifier could not skip the model

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One log-odds per (cached question, new question), symmetric in the two: > 0 leans "the same
        question"."""
        self.pairs_read += len(pairs)
        return np.array([self._both_ways(a, b) for a, b in pairs], dtype=np.float32)

    def _both_ways(self, a: str, b: str) -> float:
        encodings = self._tokenizer.encode_batch([(a, b), (b, a)])
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        out = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0].reshape(-1)
        return float(out.mean())
