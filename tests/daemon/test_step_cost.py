"""The step-cost line and the rule that decides whether another prompt shares a decode step."""

from __future__ import annotations

import math

import pytest

from localllm.daemon.engine.step_cost import StepCost


def fitted(points: list[tuple[int, float]]) -> StepCost:
    cost = StepCost()
    for tokens, seconds in points:
        cost.observe(tokens, seconds)
    return cost


def test_the_line_through_the_observed_steps_is_recovered():
    cost = fitted([(n, 0.010 + 0.006 * n) for n in (1, 2, 5, 8, 33, 200)])
    assert cost.known and isinstance(cost.line, tuple)  # replaced whole: readers never see half a fit
    assert cost.fixed_s == pytest.approx(0.010, rel=1e-6)
    assert cost.per_token_s == pytest.approx(0.006, rel=1e-6)


def test_until_steps_of_different_sizes_are_seen_prompts_are_packed_together():
    cost = fitted([(1, 0.01), (1, 0.012)])  # one size class: the slope is unknown
    assert not cost.known
    assert cost.worth_adding(prompt_tokens=500, first_tokens_in_step=7, decoding=0)
    assert fitted([(2, 0.01), (3, 0.02)]).known is False  # 2 and 3 tokens: too close to tell a slope


def test_a_cpu_serves_a_burst_one_prompt_per_step():
    cpu = fitted([(1, 0.016), (32, 0.230)])  # ~7 ms per token, ~9 ms per step
    assert cpu.worth_adding(40, first_tokens_in_step=0, decoding=0)  # the first prompt always goes in
    assert not cpu.worth_adding(40, first_tokens_in_step=1, decoding=0)
    assert not cpu.worth_adding(40, first_tokens_in_step=1, decoding=7)
    # a one-token prompt costs the others less than a step of its own would cost it
    assert cpu.worth_adding(1, first_tokens_in_step=1, decoding=7)


def test_prompts_queued_behind_count_short_ones_are_packed_long_ones_are_not():
    cpu = fitted([(1, 0.016), (32, 0.230)])
    # 31 two-token prompts waiting behind: one step each would make all of them wait far longer
    assert cpu.worth_adding(2, first_tokens_in_step=1, decoding=0, waiting=31)
    # seven 40-token prompts: the first of them is better off alone, even counting those behind
    assert not cpu.worth_adding(40, first_tokens_in_step=1, decoding=0, waiting=7)


def test_a_gpu_packs_a_burst_into_one_step():
    gpu = fitted([(1, 0.005), (32, 0.0052), (512, 0.012)])  # a step costs about the same at any size
    assert all(gpu.worth_adding(40, first_tokens_in_step=m, decoding=8) for m in range(1, 8))
    assert not gpu.worth_adding(4000, first_tokens_in_step=7, decoding=0)


def test_recent_steps_count_more_and_bad_timings_are_ignored():
    cost = fitted([(1, 0.010), (32, 0.320)])
    slow_per_token = cost.per_token_s
    for _ in range(30):  # the machine got faster (another process went away)
        cost.observe(32, 0.100)
    assert cost.per_token_s < slow_per_token / 2
    before = (cost.fixed_s, cost.per_token_s)
    for tokens, seconds in [(0, 0.1), (8, math.nan), (8, -1.0), (8, 0.0), (8, math.inf)]:
        cost.observe(tokens, seconds)
    assert (cost.fixed_s, cost.per_token_s) == before


def test_a_noisy_fit_never_goes_negative():
    cost = fitted([(1, 0.030), (4, 0.010), (64, 0.012)])  # a slow first step: negative raw slope
    assert cost.per_token_s >= 0 and cost.fixed_s >= 0
