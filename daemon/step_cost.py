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
whether adding it to this step is worth the delay it puts on the first tokens
already in it. Observations are kept per size class (1, 2-3, 4-7, ... tokens),
each an exponentially weighted mean, so a long run of same-sized decode steps
cannot wash out what prompt-sized steps cost.
"""

from __future__ import annotations

import math

# Weight of a new observation in its size class's running mean.
_SMOOTHING = 0.2
# Below this spread of step sizes (in tokens) the slope is not identifiable yet.
_MIN_SPREAD = 4.0


class StepCost:
    def __init__(self) -> None:
        # size class (floor(log2 tokens)) -> [mean tokens, mean seconds]
        self._classes: dict[int, list[float]] = {}
        self.fixed_s = 0.0
        self.per_token_s = 0.0
        self.known = False

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
        slope = sum((n - mean_n) * (t - mean_t) for n, t in points) / spread
        self.per_token_s = max(slope, 0.0)
        self.fixed_s = max(mean_t - self.per_token_s * mean_n, 0.0)
        self.known = True

    def worth_adding(self, prompt_tokens: int, first_tokens_in_step: int, decoding: int) -> bool:
        """Should a prompt of ``prompt_tokens`` that would finish in this step join it?

        Joining delays the ``first_tokens_in_step`` prompts already finishing in this
        step by the prompt's own time; waiting makes the prompt itself pay one more
        step (the fixed cost plus the tokens of everyone decoding in it). Until the
        cost is known, prompts are packed together (the batch-everything default).
        """
        if first_tokens_in_step == 0 or not self.known:
            return True
        delay_to_others = first_tokens_in_step * self.per_token_s * prompt_tokens
        own_extra_wait = self.fixed_s + self.per_token_s * (decoding + first_tokens_in_step)
        return delay_to_others <= own_extra_wait
