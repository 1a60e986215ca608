"""The semantic cache's duplicate verifier, with real embeddings from the project's embedder and the
shipped cross-encoder.

Each rejection case checks two things: the decisive-token feature for its class fires, and the
shipped verifier refuses the pair at the real cosine. The paraphrases below are ones the shipped
verifier accepts at its default operating point; it is strict by design, because on the Quora data
even small wording changes often mean a different question.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from localllm.file_digest import sha256_of_file
from localllm.store.antonym_lexicon import LEXICON_FILE, AntonymLexicon, load_lexicon
from localllm.store.cache_verifier import (
    ASSET,
    FEATURE_NAMES,
    FORMAT_VERSION,
    VERIFIER_FEATURES,
    DuplicateVerifier,
    pair_features,
)


@pytest.fixture(scope="module")
def embedder():
    from localllm.store.embedder import load_embedder

    # The default backend, the one the verifier was trained with. (Not "onnx" here: importing onnxruntime
    # after usearch, which tests/store/test_cache_index.py loads first, segfaults the interpreter.)
    return load_embedder("sentence-transformers")


@pytest.fixture(scope="module")
def verifier() -> DuplicateVerifier:
    return DuplicateVerifier.load_default()


def cosine(embedder, a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return float(np.dot(va, vb))


def features(a: str, b: str, cos: float) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, pair_features(a, b, cos)))


PARAPHRASES = [
    ("How do I learn Python?", "How can I learn Python?"),
    ("What is the best way to learn Python?", "What's the best way to learn Python?"),
    ("How can I improve my English?", "How do I improve my English?"),
    ("What is the meaning of life?", "What's the meaning of life?"),
    # Few shared words: the hand-built features alone refused the first one (score 0.80 at a threshold of
    # 0.88); the cross-encoder reads these as the same question.
    ("How can I improve my English speaking skills?", "How do I improve my spoken English?"),
    ("How do I get rid of acne?", "How can I get rid of pimples?"),
    ("How can I improve my memory?", "How do I get a better memory?"),
    ("Is it safe to eat raw eggs?", "Can you safely eat raw eggs?"),
]


@pytest.mark.parametrize(("cached", "new"), PARAPHRASES)
def test_accepts_paraphrases(embedder, verifier, cached, new):
    cos = cosine(embedder, cached, new)
    assert verifier.accepts(cached, new, cos), verifier.score(cached, new, cos)


# (cached, new, the feature that must flag the difference)
DECISIVE = [
    ("What is 2+2?", "What is 2+3?", "number_mismatch"),
    ("How many days until 5 June?", "How many days until 15 June?", "number_mismatch"),
    ("Is coffee bad for you?", "Is coffee not bad for you?", "negation_mismatch"),
    ("Why do people smoke?", "Why don't people smoke?", "negation_mismatch"),
    ("What is the capital of France?", "What is the capital of Spain?", "entity_mismatches"),
    ("Is Google a good place to work?", "Is Microsoft a good place to work?", "entity_mismatches"),
    ('What does "carpe diem" mean?', 'What does "memento mori" mean?', "quote_mismatch"),
    ("How many grams in a pound?", "How many grams in a kilogram?", "unit_mismatch"),
    ("How many miles is a marathon?", "How many kilometers is a marathon?", "unit_mismatch"),
    ("Who won the World Cup in 2014?", "Who won the World Cup in 2018?", "date_mismatch"),
    ("What happened on Monday?", "What happened on Friday?", "date_mismatch"),
    ("Why is the sky blue?", "When is the sky blue?", "wh_mismatch"),
    ("Why do cats purr?", "How do cats purr?", "wh_mismatch"),
    ("Is Python better than Java?", "Is Python worse than Java?", "comparative_mismatch"),
    ("Which is the best laptop for programming?", "Which is the cheapest laptop for programming?",
     "comparative_mismatch"),
    ("How is Apple better than Samsung?", "How is Samsung better than Apple?", "word_order_swap"),
    ("What is the difference between C and C++?", "What is the difference between C++ and C#?", "unmatched_max"),
    ("How can I lose weight quickly?", "How can I gain weight quickly?", "antonym_split"),
    # Opposites the hand list lacks, from WordNet (store/assets/antonyms.tsv).
    ("Is backward time travel possible?", "Is backward time travel impossible?", "lexicon_antonym_split"),
    ("What is at the top of the ocean?", "What is at the bottom of the ocean?", "lexicon_antonym_split"),
    ("Is it healthy to skip breakfast?", "Is it unhealthy to skip breakfast?", "lexicon_antonym_split"),
]


@pytest.mark.parametrize(("cached", "new", "flag"), DECISIVE)
def test_rejects_decisive_differences(embedder, verifier, cached, new, flag):
    cos = cosine(embedder, cached, new)
    assert features(cached, new, cos)[flag] > 0
    assert not verifier.accepts(cached, new, cos), verifier.score(cached, new, cos)


def test_decisive_flag_lowers_the_score(verifier):
    """Monotonic by construction: the same pair with a mismatch flag set never scores higher, and a
    higher cross-encoder log-odds never scores lower."""
    base = features("Is coffee bad for you?", "Is coffee bad for you?", 0.97) | {"cross_encoder_logit": 2.0}
    assert list(base) == VERIFIER_FEATURES
    for flag in ("number_mismatch", "negation_mismatch", "quote_mismatch", "unit_mismatch", "date_mismatch",
                 "wh_mismatch", "comparative_mismatch", "word_order_swap", "lexicon_antonym_split"):
        flagged = dict(base, **{flag: 1.0})
        scores = verifier.score_features(np.array([list(base.values()), list(flagged.values())]))
        assert scores[1] <= scores[0], flag
    rows = [list((base | {"cross_encoder_logit": logit}).values()) for logit in np.linspace(-6, 6, 25)]
    assert np.all(np.diff(verifier.score_features(np.array(rows))) >= 0)


def test_either_question_may_be_the_cached_one(embedder, verifier):
    a, b = "How can I improve my English?", "How do I improve my English?"
    cos = cosine(embedder, a, b)
    assert pair_features(a, b, cos) == pair_features(b, a, cos)
    assert verifier.score(a, b, cos) == pytest.approx(verifier.score(b, a, cos))
    assert verifier.accepts(a, a, 1.0)


def test_several_candidates_score_as_each_alone(embedder, verifier):
    """A candidate's score does not depend on the others (no padding to a longer neighbour: int8
    activations are quantized per batch)."""
    new = "How do I learn Python?"
    cached = ["How can I learn Python?", "How do I learn Java?", "What is Python?",
              "What is the most effective way for a complete beginner to learn the Python programming language?"]
    cosines = [cosine(embedder, c, new) for c in cached]
    together = verifier.scores(cached, new, cosines)
    assert together.tolist() == [verifier.score(c, new, x) for c, x in zip(cached, cosines)]
    logits = verifier.cross_encoder.logits([(c, new) for c in cached])
    assert logits.tolist() == [verifier.cross_encoder.logits([(c, new)])[0] for c in cached]


def test_the_cross_encoder_reads_meaning_not_shared_words(verifier):
    """It ranks a paraphrase that shares few words above pairs that share almost all of theirs but ask
    something else; the trees' decisive-word flags do the rest (test_rejects_decisive_differences)."""
    paraphrase, gain, spain = verifier.cross_encoder.logits([
        ("How do I get rid of acne?", "How can I get rid of pimples?"),
        ("How can I lose weight quickly?", "How can I gain weight quickly?"),
        ("What is the capital of France?", "What is the capital of Spain?")])
    assert paraphrase > 2.0 and paraphrase > gain and spain < 0, (paraphrase, gain, spain)


@pytest.mark.parametrize(("cached", "new"), [
    ("What are the best ways to lose weight?", "What is the best way to lose weight?"),
    ("How can I stop procrastinating?", "How do I overcome procrastination?"),  # 0.873 at a default of 0.880
])
def test_a_looser_operating_point_accepts_looser_paraphrases(embedder, cached, new):
    cos = cosine(embedder, cached, new)
    assert DuplicateVerifier.load_default(0.10).accepts(cached, new, cos)


def test_operating_points_trade_recall_for_safety():
    strict, default, loose = (DuplicateVerifier.load_default(share) for share in (0.02, None, 0.15))
    assert strict.threshold >= default.threshold >= loose.threshold
    points = {p["max_wrong_hit_share"]: p for p in default.spec["operating_points"]}
    assert default.operating_point is points[default.spec["default_wrong_hit_share"]]
    assert DuplicateVerifier.load_default(0.07).threshold == points[0.05]["threshold"]  # the strictest under 7%
    assert DuplicateVerifier.load_default(0.01).threshold == points[min(points)]["threshold"]
    recalls = [points[share]["out_of_fold"]["recall"] for share in sorted(points)]
    assert recalls == sorted(recalls)


def test_min_cosine_is_a_hard_floor(verifier):
    text = "What is the capital of France?"
    assert verifier.accepts(text, text, 1.0)
    assert not verifier.accepts(text, text, verifier.min_cosine - 0.01)
    assert not verifier.accepts(text, text, float("nan"))


def test_shipped_json_matches_the_code():
    spec = json.loads(ASSET.read_text(encoding="utf-8"))
    assert spec["format_version"] == FORMAT_VERSION
    assert spec["feature_names"] == FEATURE_NAMES + ["cross_encoder_logit"] == VERIFIER_FEATURES
    model = ASSET.parent / spec["cross_encoder"]["file"]
    assert sha256_of_file(model) == spec["cross_encoder"]["sha256"]
    assert model.stat().st_size == spec["cross_encoder"]["size_bytes"] <= 30 * 2**20  # issue 20: at most 30 MB
    assert {p["max_wrong_hit_share"] for p in spec["operating_points"]} >= {spec["default_wrong_hit_share"]}
    assert all(0.0 < p["threshold"] < 1.0 for p in spec["operating_points"])
    assert 0.0 < spec["min_cosine"] < 1.0
    trees = spec["trees"]
    depth = trees["depth"]
    assert len(trees["feature"]) == len(trees["threshold"]) == len(trees["leaf_value"]) > 0
    assert all(len(row) == 2 ** depth - 1 for row in trees["feature"])
    assert all(len(row) == 2 ** depth for row in trees["leaf_value"])
    assert max(max(row) for row in trees["feature"]) == len(VERIFIER_FEATURES) - 1  # the trees read the logit
    assert "best_recall_at_wrong_hit_share" in spec["validation"]
    assert all(p["out_of_fold"]["near_miss_hit_rate"] <= 0.01 for p in spec["operating_points"])
    assert spec["antonym_lexicon"]["sha256"] == load_lexicon().sha256
    assert spec["antonym_lexicon"]["pairs"] == len(load_lexicon())
    verifier = DuplicateVerifier(spec)
    assert verifier.operating_point["max_wrong_hit_share"] == spec["default_wrong_hit_share"]
    assert verifier.min_cosine == spec["min_cosine"]


def test_rejects_a_spec_for_other_features():
    spec = json.loads(ASSET.read_text(encoding="utf-8"))
    spec["feature_names"] = spec["feature_names"][:-1]
    with pytest.raises(ValueError, match="retrain"):
        DuplicateVerifier(spec)


def test_a_damaged_cross_encoder_is_refused_with_a_way_out(tmp_path):
    spec = json.loads(ASSET.read_text(encoding="utf-8"))
    model = tmp_path / spec["cross_encoder"]["file"]
    shutil.copyfile(ASSET.parent / spec["cross_encoder"]["file"], model)
    with model.open("r+b") as f:
        f.truncate(model.stat().st_size // 2)
    with pytest.raises(ValueError, match="sha256.*reinstall localllm"):
        DuplicateVerifier(spec, assets=tmp_path)
    model.unlink()
    with pytest.raises(ValueError, match="missing: reinstall localllm"):
        DuplicateVerifier(spec, assets=tmp_path)


def test_the_opposites_list_holds_inflected_and_irregular_forms():
    lexicon = load_lexicon()
    assert len(lexicon) > 5000
    for a, b in (("possible", "impossible"), ("sold", "bought"), ("gave", "took"), ("top", "bottom")):
        assert lexicon.split({a}, {b}) and lexicon.split({b}, {a}), (a, b)
    assert not lexicon.split({"top"}, {"top", "ocean"}) and not lexicon.split(set(), {"bottom"})
    assert not lexicon.split({"offer"}, {"on"})  # "off"+"er" is a word of its own, not a comparative


def test_a_different_opposites_list_is_refused_with_a_way_out(tmp_path):
    spec = json.loads(ASSET.read_text(encoding="utf-8"))
    spec["antonym_lexicon"]["sha256"] = "0" * 64
    with pytest.raises(ValueError, match="antonyms.tsv.*reinstall localllm, or retrain"):
        DuplicateVerifier(spec)
    with pytest.raises(ValueError, match="cannot be read.*reinstall localllm"):
        AntonymLexicon.from_file(tmp_path / LEXICON_FILE.name)


CANDIDATE_SETS = [
    ("How do I learn Python?", ["How can I learn Python?", "How do I learn Java?", "What is Python?",
                                "How do I learn Python fast?"]),
    ("How can I stop procrastinating?", ["How do I overcome procrastination?", "Why do I procrastinate?",
                                         "How can I stop overthinking?"]),
    ("What is the capital of France?", ["What is the capital of Spain?", "What is the capital of Germany?"]),
    ("Is coffee bad for you?", ["Is coffee not bad for you?", "Is tea bad for you?", "Is coffee good for you?"]),
]


@pytest.mark.parametrize(("new", "cached"), CANDIDATE_SETS)
def test_best_match_is_the_best_score_over_the_threshold(embedder, new, cached):
    verifier = DuplicateVerifier.load_default()
    cosines = [cosine(embedder, c, new) for c in cached]
    scores = verifier.scores(cached, new, cosines)
    expected = (int(np.argmax(scores)), float(scores.max())) if scores.max() >= verifier.threshold else None
    before = verifier.cross_encoder.pairs_read
    found = verifier.best_match(cached, new, cosines)
    assert (found is None) == (expected is None)
    if found is not None:
        assert found[0] == expected[0] and found[1] == pytest.approx(expected[1], abs=1e-12)
    assert verifier.cross_encoder.pairs_read - before <= len(cached)


def test_decisive_differences_never_reach_the_cross_encoder(embedder):
    """A different name or number caps the score under the threshold whatever the cross-encoder says,
    so the lookup skips its ~8 ms a pair."""
    verifier = DuplicateVerifier.load_default()
    new, cached = "What is the capital of France?", ["What is the capital of Spain?", "What is the capital of Peru?"]
    cosines = [cosine(embedder, c, new) for c in cached]
    before = verifier.cross_encoder.pairs_read
    assert verifier.best_match(cached, new, cosines) is None
    assert verifier.cross_encoder.pairs_read == before


def test_trees_not_monotonic_in_the_cross_encoder_are_refused():
    """best_match's skipping is exact only if more cross-encoder confidence never lowers a score."""
    spec = json.loads(ASSET.read_text(encoding="utf-8"))
    spec["trained_on"]["monotonic"]["cross_encoder_logit"] = 0
    with pytest.raises(ValueError, match="not monotonic.*retrain"):
        DuplicateVerifier(spec)
