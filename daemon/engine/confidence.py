"""How sure the local model was of its answer: mean token log-probability and entropy.

The batching scheduler feeds it each sampled token with the logits it was drawn
from (read from the context before the next decode overwrites them).
"""

from __future__ import annotations

import numpy as np


class ConfidenceMeter:
    def __init__(self):
        self._logprob_sum = 0.0
        self._entropy_sum = 0.0
        self._count = 0

    def observe(self, logits, token: int) -> None:
        logits = np.asarray(logits, dtype=np.float64)
        shifted = logits - logits.max()
        log_probs = shifted - np.log(np.exp(shifted).sum())
        self._logprob_sum += float(log_probs[token])
        self._entropy_sum += float(-(np.exp(log_probs) * log_probs).sum())
        self._count += 1

    @property
    def mean_logprob(self) -> float | None:
        return self._logprob_sum / self._count if self._count else None

    @property
    def mean_entropy(self) -> float | None:
        return self._entropy_sum / self._count if self._count else None
