"""The escalation threshold is recalibrated from traffic, and that survives a restart."""

from __future__ import annotations

import pytest

from localllm.config import Settings
from localllm.daemon.pipeline.runtime import MIN_TRAFFIC_FOR_CALIBRATION, build_planner
from localllm.daemon.pipeline.services import Services
from localllm.decision.router.complexity_router import ComplexityRouter


def services_with_history(scores: list[float]) -> Services:
    services = Services(writer=None, request_log=None, complexity_router=ComplexityRouter.load())
    services.recent_router_scores = scores
    return services


def test_threshold_comes_from_the_logged_traffic_once_there_is_enough():
    settings = Settings.model_validate({"router": {"escalate_share": 0.25}})
    fresh = build_planner(settings, services_with_history([]), None).threshold.current()
    reference = ComplexityRouter.load().reference_scores
    assert fresh == pytest.approx(float(sorted(reference)[int(0.75 * len(reference))]), abs=0.02)
    history = [i / 1000 for i in range(MIN_TRAFFIC_FOR_CALIBRATION * 2)]  # uniform on [0, 0.4)
    seeded = build_planner(settings, services_with_history(history), None).threshold.current()
    assert seeded == pytest.approx(0.3, abs=0.01)  # the 75th percentile of this daemon's own scores


def test_a_fixed_threshold_or_no_recalibration_ignores_traffic():
    history = [0.01] * (MIN_TRAFFIC_FOR_CALIBRATION * 2)
    fixed = Settings.model_validate({"router": {"threshold": 0.7}})
    assert build_planner(fixed, services_with_history(history), None).threshold.current() == 0.7
    frozen = Settings.model_validate({"router": {"escalate_share": 0.25, "recalibrate": False}})
    assert build_planner(frozen, services_with_history(history), None).threshold.current() > 0.05
