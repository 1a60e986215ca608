"""The complexity router: the shipped asset, scores from real embeddings, the threshold a target
escalation share turns into (from the reference sample, then from traffic), and RouteLLM's APGR
measure on hand-made cases whose answer is known."""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from localllm.decision.router.complexity_router import (
    MODEL_FILE,
    ComplexityRouter,
    EscalationThreshold,
    apgr,
    metadata_path,
)
from localllm.decision.router.features import FEATURE_NAMES, prompt_features

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "router" / "routellm_sample.csv"

PROMPTS = [
    "What is the capital of France?",
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with four. She sells the "
    "rest at $2 each. How much does she make every week, in dollars?",
    "For which of these two scenarios does the main character do something clearly morally wrong? "
    "Scenario 1 | I took the last cookie. Scenario 2 | I lied to the police.\n"
    "A. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong\nD. Not wrong, Not wrong\nAnswer:",
    "def f(x):\n    return x ** 2\n\nWhat does f(3) return?",
    "Объясни, почему небо голубое, и приведи формулу рассеяния Рэлея.",
    "",
    "word " * 20_000,
]


@pytest.fixture(scope="module")
def router() -> ComplexityRouter:
    return ComplexityRouter.load()


@pytest.fixture(scope="module")
def embedder():
    from localllm.store.embedder import load_embedder

    return load_embedder("onnx")  # the backend the router was trained with


def test_asset_files_and_metadata(router):
    assert MODEL_FILE.name == "complexity_router.onnx" and metadata_path(MODEL_FILE).name == "complexity_router.json"
    assert MODEL_FILE.stat().st_size < 2 * 1024 * 1024
    metadata = json.loads(metadata_path(MODEL_FILE).read_text(encoding="utf-8"))
    assert metadata["feature_names"] == FEATURE_NAMES
    assert metadata["embedding"]["dimensions"] == 384
    oof = metadata["validation"]["out_of_fold_apgr"]
    assert {"router", "length only (chars)", "embedding LR", "random (mean of 20)"} <= set(oof)
    reference = router.reference_scores
    assert len(reference) == 1001 and np.all(np.diff(reference) >= 0)
    assert 0.0 <= reference[0] <= reference[-1] <= 1.0


def test_scores_in_unit_interval_and_deterministic(router, embedder):
    vectors = embedder.embed(PROMPTS)
    first = [router.score(p, v) for p, v in zip(PROMPTS, vectors)]
    assert all(0.0 <= s <= 1.0 for s in first)
    assert [router.score(p, v) for p, v in zip(PROMPTS, vectors)] == first
    assert len(set(first)) > 3  # it does tell prompts apart

    # Concurrent calls from worker threads give the same answers.
    results: list[list[float]] = []

    def work() -> None:
        results.append([router.score(p, v) for p, v in zip(PROMPTS, vectors)])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [first] * 4


def test_wrong_embedding_size_is_refused(router):
    with pytest.raises(ValueError, match="384"):
        router.score("hello", np.zeros(128, dtype=np.float32))


def test_features_have_names_and_float32():
    vector = prompt_features(PROMPTS[2])
    assert vector.dtype == np.float32 and vector.shape == (len(FEATURE_NAMES),)
    named = dict(zip(FEATURE_NAMES, vector.tolist()))
    assert named["option_count"] == 4 and named["option_combination_words"] > 0.5 and named["pipe_claims"] > 0
    assert np.all(np.isfinite(prompt_features(PROMPTS[-1]))) and np.all(np.isfinite(prompt_features("")))


def test_fixed_threshold_ignores_traffic():
    gate = EscalationThreshold(np.linspace(0, 1, 1001), threshold=0.7)
    for _ in range(500):
        gate.observe(0.1)
    assert gate.current() == 0.7 and gate.escalates(0.7) and not gate.escalates(0.69)


def test_share_sets_threshold_from_reference(router):
    gate = EscalationThreshold(router.reference_scores, escalate_share=0.2)
    above = np.mean(router.reference_scores >= gate.current())
    assert abs(above - 0.2) <= 0.01
    assert EscalationThreshold(router.reference_scores, escalate_share=0.0).escalates(1.0) is False
    assert EscalationThreshold(router.reference_scores, escalate_share=1.0).escalates(0.0) is True


def test_traffic_recalibrates_share_threshold():
    rng = np.random.default_rng(0)
    reference = np.linspace(0.0, 1.0, 1001)
    gate = EscalationThreshold(reference, escalate_share=0.2, window=500, min_traffic=200)
    assert gate.current() == pytest.approx(0.8, abs=0.002)
    traffic = rng.uniform(0.0, 0.1, size=199)
    for s in traffic:
        gate.observe(float(s))
    assert not gate.from_traffic and gate.current() == pytest.approx(0.8, abs=0.002)  # too little traffic yet
    gate.observe(0.05)
    assert gate.from_traffic and gate.current() < 0.1  # this daemon's prompts score low: the threshold follows
    seen = np.r_[traffic, 0.05]
    assert abs(np.mean(seen >= gate.current()) - 0.2) <= 0.01
    for s in rng.uniform(0.5, 0.6, size=500):  # the window rolls: only the latest 500 count
        gate.observe(float(s))
    assert 0.5 < gate.current() < 0.6


def test_threshold_arguments_are_checked():
    with pytest.raises(ValueError):
        EscalationThreshold([0.5], threshold=0.5, escalate_share=0.2)
    with pytest.raises(ValueError):
        EscalationThreshold([0.5])
    with pytest.raises(ValueError):
        EscalationThreshold([0.5], escalate_share=1.5)
    with pytest.raises(ValueError):
        EscalationThreshold([0.5], escalate_share=0.2, min_traffic=0)


def test_min_traffic_above_window_turns_recalibration_off():
    gate = EscalationThreshold(np.linspace(0, 1, 1001), escalate_share=0.2, window=100, min_traffic=2**62)
    for _ in range(1000):
        gate.observe(0.01)
    assert not gate.from_traffic and gate.current() == pytest.approx(0.8, abs=0.002)


def test_apgr_hand_made_cases():
    # Ten prompts; the strong model is right on all, the weak one on eight: two prompts gain.
    weak = np.array([0, 0] + [1] * 8)
    strong = np.ones(10)
    oracle = np.array([1.0, 1.0] + [0.0] * 8)
    # Curve: (0, 0.8) -> (0.2, 1.0) -> (1, 1.0); area 0.98; (0.98 - 0.8) / (1.0 - 0.8) = 0.9.
    assert apgr(oracle, weak, strong) == pytest.approx(0.9)
    assert apgr(oracle, weak, strong, points=None) == pytest.approx(0.9)
    # A constant score has only the all-weak and all-strong points: the diagonal, exactly 0.5.
    assert apgr(np.zeros(10), weak, strong) == pytest.approx(0.5)
    # The oracle order reversed recovers the gap last: below a random router.
    assert apgr(-oracle, weak, strong, points=None) == pytest.approx(0.1)
    # A monotone transform of the scores changes nothing.
    scores = np.random.default_rng(1).random(10)
    assert apgr(scores, weak, strong) == pytest.approx(apgr(np.exp(3 * scores), weak, strong))


def test_apgr_oracle_approaches_one_and_beats_random():
    # One gaining prompt in a hundred: sending it strong first recovers the whole gap at once.
    weak = np.r_[0, np.ones(99)]
    strong = np.ones(100)
    assert apgr(np.r_[1.0, np.zeros(99)], weak, strong, points=None) == pytest.approx(0.995)
    # With prompts where escalation hurts too, the oracle order (+1 first, -1 last) is well above 0.5
    # and a random router is near it.
    rng = np.random.default_rng(2)
    weak = rng.random(2000) < 0.6
    strong = np.where(weak, rng.random(2000) < 0.9, rng.random(2000) < 0.5)
    gain = strong.astype(int) - weak.astype(int)
    assert apgr(gain + 1e-6 * rng.random(2000), weak, strong) > 0.9
    assert abs(np.mean([apgr(rng.random(2000), weak, strong) for _ in range(20)]) - 0.5) < 0.03
    with pytest.raises(ValueError):
        apgr([0.1, 0.2], [1, 0], [1, 0])  # both models equal: no gap to recover


def _dev_sample() -> list[tuple[str, str, bool, bool]]:
    """150 MMLU and 150 GSM8K rows carved from RouteLLM's labels (tests/data/router, Apache-2.0)."""
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        return [(r["dataset"], r["prompt"], r["weak_correct"] == "True", r["strong_correct"] == "True")
                for r in csv.DictReader(handle)]


def test_shipped_model_beats_length_only_in_sample(router, embedder):
    """In-sample (the shipped model saw these prompts): a sanity check that the asset is the trained model,
    not a quality claim. The held-out figures are the out-of-fold ones in the metadata."""
    sample = sorted(_dev_sample(), key=lambda row: len(row[1]))  # similar lengths per batch: less padding
    texts = [text for _, text, _, _ in sample]
    vectors = np.concatenate([embedder.embed(texts[i:i + 32]) for i in range(0, len(texts), 32)])
    features = np.stack([prompt_features(text) for _, text, _, _ in sample])
    scores = router.score_batch(features, vectors)
    for dataset in ("mmlu", "gsm8k"):
        rows = np.array([d == dataset for d, _, _, _ in sample])
        weak = np.array([w for _, _, w, _ in sample])[rows]
        strong = np.array([s for _, _, _, s in sample])[rows]
        lengths = np.array([len(t) for _, t, _, _ in sample], dtype=float)[rows]
        assert apgr(scores[rows], weak, strong) > apgr(lengths, weak, strong), dataset
