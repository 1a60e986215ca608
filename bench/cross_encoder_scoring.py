"""Scores question pairs with a cross-encoder exported by ``train_cache_cross_encoder.py`` (an experiment,
not shipped: see BENCHMARKS.md, "Semantic cache quality (issue 20)").

Both questions go through one small transformer at once ("[CLS] cached [SEP] new [SEP]"), so every
word of one can attend to every word of the other. The int8 ONNX model runs in onnxruntime with the
embedder's own tokenizer, as the daemon would run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from localllm.store.embedder import TOKENIZER_FILE

MAX_PAIR_TOKENS = 128  # two questions; longer pairs are cut from the longer one's end


class CrossEncoder:
    def __init__(self, model_file: Path, threads: int = 1):
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
        self._tokenizer.enable_truncation(MAX_PAIR_TOKENS, strategy="longest_first")
        self._tokenizer.enable_padding()

    def logits(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """One log-odds per (cached question, new question): > 0 leans "the same question"."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        encodings = self._tokenizer.encode_batch(pairs)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        return self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0].reshape(-1)
