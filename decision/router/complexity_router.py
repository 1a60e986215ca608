"""Scores how likely a prompt needs the strong model, and turns a setting into a threshold.

The score is the probability, from a model trained on public labels (RouteLLM's
MMLU and GSM8K answers of Mixtral-8x7B and GPT-4), that escalating this prompt
turns a wrong answer into a right one. Inputs are the prompt's L2-normalised
all-MiniLM-L6-v2 embedding, which the daemon computes once per request for the
cache anyway, and the cheap text features of ``features.py``. The model is one
ONNX graph (``assets/complexity_router.onnx``); its metadata, the out-of-fold
quality figures and a reference sample of scores sit beside it in
``assets/complexity_router.json``. Runtime needs onnxruntime and numpy only.

``apgr`` is RouteLLM's quality measure, here so that the training script, the
benchmark and the tests compute it one way.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from pathlib import Path

import numpy as np

from localllm.decision.router.features import FEATURE_NAMES, prompt_features

ASSET_DIR = Path(__file__).parent / "assets"
MODEL_FILE = ASSET_DIR / "complexity_router.onnx"
FORMAT_VERSION = 1
EMBEDDING_DIMENSIONS = 384


def metadata_path(model_path: Path) -> Path:
    """The JSON that travels with a model file: same name, ``.json``."""
    return model_path.with_suffix(".json")


class ComplexityRouter:
    """One ONNX session plus its metadata. ``score`` is safe to call from many threads at once
    (onnxruntime sessions are, and feature extraction keeps no state)."""

    def __init__(self, session, metadata: dict):
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"complexity router format {metadata.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}")
        if metadata["feature_names"] != FEATURE_NAMES:
            raise ValueError("the complexity router was trained on different text features; retrain it with "
                             "bench/train_router.py")
        self.metadata = metadata
        self.embedding_dimensions = int(metadata["embedding"]["dimensions"])
        self.reference_scores = np.asarray(metadata["reference_scores"], dtype=np.float64)
        self._session = session

    @classmethod
    def load(cls, path: Path | None = None, threads: int = 1) -> ComplexityRouter:
        """The packaged model by default. One intra-op thread: the graph is tiny, and the daemon
        scores requests from several worker threads, so more threads per call only contend."""
        import onnxruntime

        path = Path(path) if path is not None else MODEL_FILE
        metadata = json.loads(metadata_path(path).read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(int(threads), 1)
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(session, metadata)

    def score_batch(self, features: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Scores for (n, features) text features and (n, dimensions) embeddings, float64 in [0, 1]."""
        features = np.ascontiguousarray(np.atleast_2d(features), dtype=np.float32)
        embeddings = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        if embeddings.shape[1] != self.embedding_dimensions or features.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"expected {self.embedding_dimensions}-d embeddings and {len(FEATURE_NAMES)} features, "
                             f"got {embeddings.shape[1]} and {features.shape[1]}")
        (scores,) = self._session.run(["score"], {"features": features, "embedding": embeddings})
        return np.clip(scores.reshape(-1).astype(np.float64), 0.0, 1.0)

    def score(self, prompt: str, embedding: np.ndarray) -> float:
        """In [0, 1]; higher = more likely the strong model is needed. ``embedding`` is the prompt's
        normalised all-MiniLM-L6-v2 vector, the same one the semantic cache uses."""
        return float(self.score_batch(prompt_features(prompt)[None, :], np.reshape(embedding, (1, -1)))[0])


class EscalationThreshold:
    """The score above which a request escalates, from a fixed threshold or a target share.

    With a share, the threshold is the (1 - share) quantile of the scores seen: of the
    daemon's own recent traffic once ``min_traffic`` scores were observed (a rolling
    window of ``window``), of the shipped reference sample before that (and always, when
    ``min_traffic`` exceeds ``window``: recalibration off). Traffic decides
    because its prompts are rarely like the benchmark prompts the reference comes from.
    A request escalates when its score is >= ``current()``.
    """

    def __init__(self, reference_scores, *, threshold: float | None = None, escalate_share: float | None = None,
                 window: int = 2000, min_traffic: int = 200):
        if (threshold is None) == (escalate_share is None):
            raise ValueError("set exactly one of threshold and escalate_share")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if escalate_share is not None and not 0.0 <= escalate_share <= 1.0:
            raise ValueError(f"escalate_share must be in [0, 1], got {escalate_share}")
        # min_traffic above the window is allowed: traffic then never takes over (recalibration off).
        if window < 1 or min_traffic < 1:
            raise ValueError(f"window and min_traffic must be >= 1, got {window} and {min_traffic}")
        reference = np.sort(np.asarray(reference_scores, dtype=np.float64))
        if escalate_share is not None and reference.size == 0:
            raise ValueError("a target share needs reference scores")
        self.threshold = threshold
        self.escalate_share = escalate_share
        self.min_traffic = min_traffic
        self._reference = reference
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._cached: float | None = None

    def observe(self, score: float) -> None:
        if math.isnan(score):
            return
        with self._lock:
            self._recent.append(float(score))
            self._cached = None

    @property
    def from_traffic(self) -> bool:
        """Whether ``current()`` comes from observed traffic (else from the reference sample)."""
        return self.escalate_share is not None and len(self._recent) >= self.min_traffic

    def current(self) -> float:
        if self.threshold is not None:
            return self.threshold
        share = float(self.escalate_share)
        if share <= 0.0:
            return math.nextafter(1.0, 2.0)  # above every possible score (and, unlike inf, valid JSON)
        if share >= 1.0:
            return 0.0  # everything does: every score is >= 0
        with self._lock:
            if self._cached is None:
                scores = np.fromiter(self._recent, dtype=np.float64) if self.from_traffic else self._reference
                # "higher" so that the threshold is a score actually seen: >= it escalates about `share`.
                self._cached = float(np.quantile(scores, 1.0 - share, method="higher"))
            return self._cached

    def escalates(self, score: float) -> bool:
        return score >= self.current()


def apgr(scores, weak_correct, strong_correct, points: int | None = 10) -> float:
    """RouteLLM's average performance gap recovered for one router on one benchmark.

    The threshold sweeps the score's quantiles (``points`` equal bins like RouteLLM's
    ``--num-results 10``, or every distinct score when None); at each threshold the
    prompts with a score >= it go strong and score the strong model's correctness, the
    rest the weak model's. The area under accuracy over strong-call share (trapezoids,
    0..1), normalised so always-weak = 0 and always-strong = 1: a random router scores
    about 0.5, a constant one exactly 0.5 (its only points are all-weak and all-strong).
    """
    scores = np.asarray(scores, dtype=np.float64)
    weak = np.asarray(weak_correct, dtype=np.float64)
    strong = np.asarray(strong_correct, dtype=np.float64)
    if not scores.size or not scores.shape == weak.shape == strong.shape:
        raise ValueError("scores, weak_correct and strong_correct need the same non-zero length")
    if weak.mean() == strong.mean():
        raise ValueError("APGR is undefined when both models score the same")
    if points:
        # RouteLLM's cuts are pandas.qcut's bin edges; its last, the maximum, is applied strictly (>),
        # which sends nothing strong: that is the all-weak point added below.
        cuts = np.quantile(scores, np.linspace(0.0, 1.0, points + 1))[:-1]
    else:
        cuts = np.unique(scores)
    shares, accuracies = [0.0], [weak.mean()]
    for cut in cuts:
        chosen = scores >= cut
        shares.append(chosen.mean())
        accuracies.append(np.where(chosen, strong, weak).mean())
    order = np.argsort(shares, kind="stable")
    x, y = np.asarray(shares)[order], np.asarray(accuracies)[order]
    area = np.trapezoid(y, x)
    span = x[-1] - x[0]
    return float((area - weak.mean() * span) / ((strong.mean() - weak.mean()) * span))
