"""What a decode step costs on this machine, and whether another prompt should share it.

When several requests arrive at once, their prompts can go into one decode step
(everyone's first token comes after all the prompts) or one after another (the
first request starts streaming after its own prompt, the next one a step later).
Which gets first tokens out sooner depends on the hardware:

- on a CPU a step costs roughly time per token x tokens, so eight 40-token
  prompts in one step make all eight wait for 320 tokens, where one per step
  makes the median request wait for about half of that;
- on a GPU a step of 300 tokens costs little more than a step of 1, so packing
  them together is best: nobody waits for another step.

``StepCost`` keeps a line ``seconds = fixed + per_token x tokens`` fitted to the
decode steps it has seen, so the scheduler can ask, for each further prompt,
whether adding it to this step lowers the mean wait for first tokens.
Observations are kept per size class (1, 2-3, 4-7, ... tokens), each an
exponentially weighted mean, so a long run of same-sized decode steps cannot
wash out what prompt-sized steps cost.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# Weight of a new observation in its size class's running mean.
_SMOOTHING = 0.2
# Below this spread of step sizes (in tokens) the slope is not identifiable yet.
_MIN_SPREAD = 4.0


class CostLine(NamedTuple):
    fixed_s: float
    per_token_s: float


class StepCost:
    """Written by the engine thread only; ``line`` is replaced whole, so readers elsewhere see a
    consistent pair."""

    def __init__(self) -> None:
        # size class (floor(log2 tokens)) -> [mean tokens, mean seconds]
        self._classes: dict[int, list[float]] = {}
        self.line: CostLine | None = None  # None until steps of different sizes were timed

    @property
    def known(self) -> bool:
        return self.line is not None

    @property
    def fixed_s(self) -> float:
        return self.line.fixed_s if self.line else 0.0

    @property
    def per_token_s(self) -> float:
        return self.line.per_token_s if self.line else 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        """Record one decode step of ``tokens`` tokens that took ``seconds``."""
        if tokens < 1 or not math.isfinite(seconds) or seconds <= 0:
            return
        key = tokens.bit_length() - 1
        seen = self._classes.get(key)
        if seen is None:
            self._classes[key] = [float(tokens), seconds]
        else:
            seen[0] += _SMOOTHING * (tokens - seen[0])
            seen[1] += _SMOOTHING * (seconds - seen[1])
        self._refit()

    def _refit(self) -> None:
        points = list(self._classes.values())
        if len(points) < 2:
            return
        mean_n = sum(n for n, _ in points) / len(points)
        mean_t = sum(t for _, t in points) / len(points)
        spread = sum((n - mean_n) ** 2 for n, _ in points)
        if spread < _MIN_SPREAD:
            return
        slope = max(sum((n - mean_n) * (t - mean_t) for n, t in points) / spread, 0.0)
        self.line = CostLine(max(mean_t - slope * mean_n, 0.0), slope)

    def worth_adding(self, prompt_tokens: int, first_tokens_in_step: int, decoding: int, waiting: int = 1) -> bool:
        """Should a prompt of ``prompt_tokens`` that would finish in this step join it?

        Joining delays the ``first_tokens_in_step`` prompts already finishing in this step
        by the prompt's own time. Waiting costs one more step (its fixed part plus a token
        for everyone then decoding) to this prompt and to every prompt queued behind it
        (``waiting`` counts this one and those). The lower total wait for first tokens
        wins. Until the cost is known, prompts are packed together (the batch-everything
        default).
        """
        line = self.line
        if first_tokens_in_step == 0 or line is None:
            return True
        delay_to_others = first_tokens_in_step * line.per_token_s * prompt_tokens
        extra_step = line.fixed_s + line.per_token_s * (decoding + first_tokens_in_step)
        return delay_to_others <= waiting * extra_step
