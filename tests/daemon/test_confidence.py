"""The engine's confidence figures, which the cascade judges answers by: real, and only when asked for."""

from __future__ import annotations

import math

from localllm.daemon.engine.llama_engine import GenerationJob
from localllm.vocabulary import Finished, Sampling


async def finish_of(scheduler, measure: bool) -> Finished:
    tokens = await scheduler.render_and_tokenize([{"role": "user", "content": "What colour is the sky?"}])
    job = GenerationJob(tokens, 24, Sampling(temperature=0.0), measure_confidence=measure)
    events = [event async for event in scheduler.stream(job)]
    return events[-1]


async def test_greedy_answer_is_confident_and_unmeasured_jobs_pay_nothing(shared_registry):
    measured = await finish_of(shared_registry.default, True)
    # Greedy tokens from real logits: far more likely than uniform over the 49k vocabulary
    # (log(1/49152) = -10.8, what all-zero logits would give) and a peaked distribution.
    assert -3.0 < measured.mean_logprob < 0.0
    assert 0.0 < measured.mean_entropy < math.log(49152) - 1
    unmeasured = await finish_of(shared_registry.default, False)
    assert unmeasured.mean_logprob is None and unmeasured.mean_entropy is None
    assert unmeasured.completion_tokens == measured.completion_tokens
