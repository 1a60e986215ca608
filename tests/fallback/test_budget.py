"""Budgets: reserve the worst case, settle the real cost, never overshoot a cap."""

from __future__ import annotations

import pytest

from localllm.config import BudgetSettings
from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.budget import GLOBAL, Budget, OverBudget, estimate_prompt_tokens, periods, worst_case_usd


def upstream(name="cloudy", **caps) -> UpstreamSettings:
    return UpstreamSettings.model_validate({"name": name, "kind": "openai", "trust": "cloud", "model": "m",
                                            "price_input_per_mtok": 1.0, "price_output_per_mtok": 4.0, **caps})


def test_reservations_count_until_settled_and_caps_hold():
    budget = Budget(BudgetSettings(daily_usd=1.0), {"cloudy": upstream()})
    first = budget.reserve("cloudy", 0.6)
    with pytest.raises(OverBudget) as info:
        budget.reserve("cloudy", 0.5)  # 0.6 reserved + 0.5 > 1.0
    assert info.value.reason == "budget"
    budget.settle(first, 0.1)  # the real cost was lower: room comes back
    second = budget.reserve("cloudy", 0.5)
    budget.release(second)
    day, month = periods()
    assert budget.used((GLOBAL, day)) == pytest.approx(0.1)
    assert budget.used(("cloudy", month)) == pytest.approx(0.1)


def test_per_upstream_caps_are_separate_from_the_global_one():
    budget = Budget(BudgetSettings(monthly_usd=10.0),
                    {"a": upstream("a", daily_budget_usd=0.5), "b": upstream("b")})
    budget.reserve("a", 0.5)
    with pytest.raises(OverBudget):
        budget.reserve("a", 0.01)
    budget.reserve("b", 5.0)  # b has no cap of its own; the global month still has room
    with pytest.raises(OverBudget):
        budget.reserve("b", 4.6)


def test_worst_case_overestimates_the_prompt():
    messages = [{"role": "user", "content": "word " * 100}]
    assert estimate_prompt_tokens(messages) >= 200  # 100 real tokens or so
    assert worst_case_usd(upstream(), 1_000_000, 1_000_000) == pytest.approx(5.0)
