"""How sure the local model was of its answer: mean token log-probability and entropy.

Fed from llama-cpp-python's stopping-criteria hook, which sees the logits each
token was sampled from but not the token itself; the token shows up as the
last input id on the next call, so its log-probability is taken one step late
(the final token, usually end-of-sequence, is left out).
"""

from __future__ import annotations

import numpy as np


class ConfidenceMeter:
    def __init__(self):
        self._previous_log_probs: np.ndarray | None = None
        self._logprob_sum = 0.0
        self._logprob_count = 0
        self._entropy_sum = 0.0
        self._entropy_count = 0

    def observe(self, input_ids, logits) -> None:
        if self._previous_log_probs is not None and len(input_ids):
            self._logprob_sum += float(self._previous_log_probs[int(input_ids[-1])])
            self._logprob_count += 1
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        self._entropy_sum += float(-(np.exp(log_probs) * log_probs).sum())
        self._entropy_count += 1
        self._previous_log_probs = log_probs

    @property
    def mean_logprob(self) -> float | None:
        return self._logprob_sum / self._logprob_count if self._logprob_count else None

    @property
    def mean_entropy(self) -> float | None:
        return self._entropy_sum / self._entropy_count if self._entropy_count else None
