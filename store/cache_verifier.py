"""Decides whether a new question asks the same thing as a cached one near it.

Cosine similarity alone serves wrong answers: "capital of France" and "capital of
Spain" sit at 0.8+, and half the near-duplicates on Quora differ in one decisive
token (a number, a name, a "not", a unit, a year, a wh-word). The verifier turns a
pair into a few dozen hand-built features (cosine, content-word overlap, mismatch
flags per decisive class) and scores them with gradient-boosted trees trained on
labelled pairs and generated near-misses (``bench/train_cache_verifier.py``). One more
feature is the log-odds of a small cross-encoder that reads both questions at once
(``cache_cross_encoder.py``): it catches paraphrases that share few words, which the
hand-built features cannot, and roughly doubles the paraphrases served at the same
wrong-hit share. The trees, a table of operating points (threshold per wrong-hit
share, measured out of fold with grouped cross-validation), a cosine floor and the
cross-encoder's file and sha256 ship in ``assets/``; ``cache.max_wrong_hit_share``
picks the point.

The trees are padded to complete binary trees so every tree is walked at once, one
numpy step per level. The feature extraction below is shared by training and run
time, so the two cannot drift.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np

from localllm.store.antonym_lexicon import AntonymLexicon, load_lexicon
from localllm.store.cache_cross_encoder import PairCrossEncoder

ASSET = Path(__file__).parent / "assets" / "cache_verifier.json"
FORMAT_VERSION = 4  # 3: the cross-encoder's log-odds is the last feature; 4: WordNet's opposites

# Words in any script (apostrophe contractions kept whole), numbers with their separators, and runs of
# symbols that carry meaning in questions ("C++" vs "C#", "=" vs "==", "~").
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?|[+#=<>~*/\\^&|@%$€£₹\[\]{}]+")
_SENTENCE_ENDS = ".?!:;(["
_QUOTED = re.compile(r'"+([^"]+)"+|“([^”]+)”|‘([^’]+)’|(?<![A-Za-z0-9])\'([^\']+)\'(?![A-Za-z0-9])')
_YEAR = re.compile(r"^(1[5-9]\d\d|20\d\d)s?$")

STOPWORDS = frozenset("""
a an the and or but if then so of to in on at by for from with about as into onto over under is are was were be been
being am do does did doing have has had having i me my mine myself we us our ours you your yours he him his she her
hers it its they them their theirs this that these those there here some any can could would should will shall may
might must just also very really too quite get got getting s t d ll m re ve o y what's it's i'm i've i'd there's
such own same other than up out off again further once all each both few only one ones thing things way ways many much
quora someone something anyone anything people person
""".split())
WH_WORDS = frozenset("what why how when where which who whom whose".split())
HOW_QUANTITY = frozenset("many much long often old far big tall fast soon".split())
NEGATIONS = frozenset("not no never none nobody nothing neither nor without cannot can't won't don't doesn't didn't "
                      "isn't aren't wasn't weren't shouldn't wouldn't couldn't haven't hasn't hadn't mustn't".split())
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update(thirty="30", forty="40", fifty="50", hundred="100", thousand="1000", million="1000000",
                    billion="1000000000", first="1st", third="3rd", half="0.5", dozen="12")
del NUMBER_WORDS["one"]  # "which one", "one of the": rarely a count; "second" is left out for the same reason
UNITS = {u: u for u in (
    "gram kilogram milligram pound ounce ton tonne liter litre milliliter gallon pint quart cup teaspoon tablespoon "
    "meter metre kilometer kilometre centimeter millimeter mile yard foot feet inch acre hectare second minute hour "
    "day week month year decade century millisecond degree celsius fahrenheit kelvin volt watt amp ampere ohm joule "
    "calorie newton pascal hertz byte bit kilobyte megabyte gigabyte terabyte pixel percent dollar cent euro rupee "
    "yen yuan pound lakh crore mph kmph rpm").split()}
UNITS.update({"g": "gram", "kg": "kilogram", "mg": "milligram", "lb": "pound", "lbs": "pound", "oz": "ounce",
              "l": "liter", "ml": "milliliter", "m": "meter", "km": "kilometer", "cm": "centimeter",
              "mm": "millimeter", "ft": "foot", "feet": "foot", "in": None, "sec": "second", "min": "minute",
              "hr": "hour", "hrs": "hour", "kb": "kilobyte", "mb": "megabyte", "gb": "gigabyte", "tb": "terabyte",
              "kw": "watt", "kwh": "watt", "usd": "dollar", "inr": "rupee", "rs": "rupee", "eur": "euro",
              "gbp": "pound", "%": "percent", "$": "dollar", "€": "euro", "£": "pound", "₹": "rupee"})
UNITS.pop("in")
DATE_WORDS = frozenset("january february march april may june july august september october november december jan feb "
                       "mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday saturday "
                       "sunday today tomorrow yesterday tonight weekend yesterday".split()) - {"may", "march"}
COMPARATIVES = frozenset("more most less least better best worse worst fewer fewest greater greatest larger largest "
                         "smaller smallest bigger biggest higher highest lower lowest faster fastest slower slowest "
                         "easier easiest harder hardest cheaper cheapest richer richest older oldest newer newest "
                         "younger youngest longer longest shorter shortest stronger strongest weaker weakest safer "
                         "safest top".split())
NOT_SUPERLATIVE = frozenset("interest forest honest request test contest protest digest invest harvest suggest "
                            "west east nest rest chest guest quest arrest manifest pest vest modest".split())
HAND_OPPOSITES = AntonymLexicon(tuple(p.split("/")) for p in (
    "buy/sell increase/decrease before/after male/female man/woman men/women boy/girl gay/straight pro/con "
    "advantage/disadvantage good/bad positive/negative rich/poor start/stop begin/end win/lose gain/lose "
    "import/export up/down in/out on/off love/hate like/dislike true/false legal/illegal right/wrong left/right "
    "past/future old/new young/old hot/cold black/white north/south east/west mother/father husband/wife "
    "son/daughter brother/sister introvert/extrovert online/offline android/iphone mac/windows").split())
PERSONS = {"i": "1", "me": "1", "my": "1", "we": "1", "us": "1", "our": "1", "you": "2", "your": "2", "he": "3",
           "him": "3", "his": "3", "she": "3", "her": "3", "they": "3", "them": "3", "their": "3"}
MODALS = frozenset("can could should would will shall may might must".split())


def _at_sentence_start(text: str, start: int) -> bool:
    before = text[:start].rstrip()
    return not before or before[-1] in _SENTENCE_ENDS


def _stem(word: str) -> str:
    """A few suffix rules, applied alike to both sides: enough to match learn/learning, cars/car."""
    if word.endswith("'s"):
        word = word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 5 and word.endswith("ly"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


class Question:
    """What the features need from one question, computed once."""

    __slots__ = ("words", "stems", "content", "bigrams", "numbers", "negations", "entities", "quoted", "units",
                 "dates", "wh", "comparatives", "persons", "modals", "trigrams", "question_marks")

    def __init__(self, text: str):
        matches = list(_WORD.finditer(text.replace("’", "'")))
        raw = [m.group() for m in matches]
        self.words = [w.lower() for w in raw]
        self.stems = [_stem(w) for w in self.words]
        self.content = {s for w, s in zip(self.words, self.stems) if w not in STOPWORDS and w not in WH_WORDS
                        and w not in NEGATIONS}
        content_seq = [s for s in self.stems if s in self.content]
        self.bigrams = set(zip(content_seq, content_seq[1:]))
        self.numbers = Counter(NUMBER_WORDS.get(w, w) for w in self.words if w[0].isdigit() or w in NUMBER_WORDS)
        self.negations = sum(w in NEGATIONS or w.endswith("n't") for w in self.words)
        # Proper nouns and acronyms: capitalised away from a sentence start, or all capitals.
        self.entities = {w.lower() for m, w in zip(matches, raw)
                         if (w[0].isupper() and w.lower() not in STOPWORDS
                             and not _at_sentence_start(text, m.start()))
                         or (len(w) > 1 and w.isupper())}
        self.quoted = {" ".join(next(g for g in q if g).lower().split()) for q in _QUOTED.findall(text)}
        self.units = {UNITS[c] for c in text if c in "%$€£₹"} | {UNITS[s] for s in self.stems if s in UNITS} \
            | {UNITS[w] for w in self.words if w in UNITS}
        self.dates = {w for w in self.words if w in DATE_WORDS or _YEAR.match(w)}
        wh = set()
        for w, nxt in zip(self.words, self.words[1:] + [""]):
            if w in WH_WORDS:
                wh.add(f"how {nxt}" if w == "how" and nxt in HOW_QUANTITY else w)
        self.wh = wh
        self.comparatives = {w for w in self.words if w in COMPARATIVES
                             or len(w) > 5 and w.endswith("est") and w not in NOT_SUPERLATIVE}
        self.persons = {PERSONS[w] for w in self.words if w in PERSONS}
        self.modals = {w for w in self.words if w in MODALS}
        flat = " " + " ".join(self.stems) + " "
        self.trigrams = {flat[i:i + 3] for i in range(len(flat) - 2)}
        self.question_marks = text.count("?")


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _differs(a, b) -> float:
    return float(a != b)


def pair_features(cached: str | Question, new: str | Question, cosine: float) -> list[float]:
    """The feature vector of one pair, in the order of FEATURE_NAMES. Symmetric in the two questions:
    either may be the one cached, so the score must not depend on which."""
    a = cached if isinstance(cached, Question) else _question(cached)
    b = new if isinstance(new, Question) else _question(new)
    only_a, only_b = a.content - b.content, b.content - a.content
    stems_only_a, stems_only_b = set(a.stems) - set(b.stems), set(b.stems) - set(a.stems)
    unmatched = sorted((len(only_a), len(only_b)))
    longest_unmatched = max((len(w) for w in only_a | only_b), default=0)
    entity_miss = len({e for e in a.entities if _stem(e) not in b.stems and e not in b.words}) \
        + len({e for e in b.entities if _stem(e) not in a.stems and e not in a.words})
    lengths = sorted((len(a.words), len(b.words)))
    return [
        cosine,
        _jaccard(a.content, b.content),
        _jaccard(a.bigrams, b.bigrams),
        _jaccard(a.trigrams, b.trigrams),
        float(unmatched[0]),
        float(unmatched[1]),
        float(longest_unmatched),
        lengths[0] / max(lengths[1], 1),
        float(lengths[1] - lengths[0]),
        float(min(len(a.content), len(b.content))),
        _differs(a.numbers, b.numbers),
        _differs(a.negations % 2, b.negations % 2),
        float(entity_miss),
        _differs(a.quoted, b.quoted),
        _differs(a.units, b.units),
        _differs(a.dates, b.dates),
        _differs(a.wh, b.wh),
        float(len(a.wh ^ b.wh)),
        _differs(a.comparatives, b.comparatives),
        _differs(a.persons, b.persons),
        _differs(a.modals, b.modals),
        float(HAND_OPPOSITES.split(stems_only_a, stems_only_b)),
        float(a.content == b.content and a.stems != b.stems and sorted(a.stems) == sorted(b.stems)),
        float(abs(a.question_marks - b.question_marks)),
        float(load_lexicon().split(stems_only_a, stems_only_b)),
    ]


FEATURE_NAMES = [
    "cosine", "content_jaccard", "content_bigram_jaccard", "char_trigram_jaccard", "unmatched_min",
    "unmatched_max", "longest_unmatched_word", "length_ratio", "length_difference", "content_words_min",
    "number_mismatch", "negation_mismatch", "entity_mismatches", "quote_mismatch", "unit_mismatch",
    "date_mismatch", "wh_mismatch", "wh_difference", "comparative_mismatch", "person_mismatch", "modal_mismatch",
    "antonym_split", "word_order_swap", "question_mark_difference", "lexicon_antonym_split",
]
CROSS_ENCODER_FEATURE = "cross_encoder_logit"
VERIFIER_FEATURES = FEATURE_NAMES + [CROSS_ENCODER_FEATURE]  # what the trees read, in order


@lru_cache(maxsize=1024)
def _question(text: str) -> Question:
    return Question(text)


@lru_cache(maxsize=4)
def _cross_encoder(model_file: Path, sha256: str) -> PairCrossEncoder:
    """One onnxruntime session per model file for the process (sessions are safe to share across threads)."""
    return PairCrossEncoder(model_file, sha256=sha256)


class DuplicateVerifier:
    """Scores (cached question, new question, cosine) as the probability both ask the same thing.

    ``max_wrong_hit_share``: the operating point, as the share of semantic hits that were wrong out of
    fold on the training pairs; the strictest shipped point at or under it (None: the spec's default).
    ``assets``: where the spec's cross-encoder file lies."""

    def __init__(self, spec: dict, max_wrong_hit_share: float | None = None, assets: Path = ASSET.parent):
        if spec.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"cache verifier format {spec.get('format_version')!r}, expected {FORMAT_VERSION}: "
                             "reinstall localllm, or retrain with bench/train_cache_verifier.py")
        if spec["feature_names"] != VERIFIER_FEATURES:
            raise ValueError("cache verifier was trained on different features; retrain it with "
                             "bench/train_cache_verifier.py")
        if spec["trained_on"]["monotonic"].get(CROSS_ENCODER_FEATURE) != 1:
            # best_match's upper bounds hold only if more cross-encoder confidence never lowers the score.
            raise ValueError("cache verifier's trees are not monotonic in the cross-encoder's log-odds; retrain "
                             "them with bench/train_cache_verifier.py")
        if load_lexicon().sha256 != spec["antonym_lexicon"]["sha256"]:
            # The trees learned what the opposites feature means with one exact word list.
            raise ValueError("the cache verifier's word list (store/assets/antonyms.tsv) is not the one its trees "
                             "were trained with; reinstall localllm, or retrain with bench/train_cache_verifier.py")
        self.spec = spec
        self.cross_encoder = _cross_encoder(assets / spec["cross_encoder"]["file"], spec["cross_encoder"]["sha256"])
        self.operating_point = self._point(max_wrong_hit_share)
        self.threshold = float(self.operating_point["threshold"])
        self.min_cosine = float(spec["min_cosine"])
        trees = spec["trees"]
        self._depth = int(trees["depth"])
        # Flattened so that one fancy index per level walks every tree: node i of tree t is at t * width + i.
        feature = np.asarray(trees["feature"], dtype=np.int64)          # (trees, 2**depth - 1)
        self._width = feature.shape[1]
        self._feature = feature.ravel()
        self._split = np.asarray(trees["threshold"], dtype=np.float64).ravel()
        self._leaf = np.asarray(trees["leaf_value"], dtype=np.float64).ravel()  # (trees * 2**depth)
        self._init = float(trees["init"])
        self._tree_start = np.arange(feature.shape[0], dtype=np.int64) * self._width

    def _point(self, max_wrong_hit_share: float | None) -> dict:
        points = sorted(self.spec["operating_points"], key=lambda p: p["max_wrong_hit_share"])
        wanted = self.spec["default_wrong_hit_share"] if max_wrong_hit_share is None else max_wrong_hit_share
        within = [p for p in points if p["max_wrong_hit_share"] <= wanted + 1e-9]
        return within[-1] if within else points[0]

    @classmethod
    def load_default(cls, max_wrong_hit_share: float | None = None) -> DuplicateVerifier:
        return cls(json.loads(ASSET.read_text(encoding="utf-8")), max_wrong_hit_share)

    def raw_score(self, features: np.ndarray) -> np.ndarray:
        """Log-odds for a (pairs, features) matrix: every tree walked at once, one level per step."""
        features = np.atleast_2d(np.asarray(features, dtype=np.float64))
        row_start = (np.arange(features.shape[0]) * features.shape[1])[:, None]
        flat = features.ravel()
        node = np.zeros((features.shape[0], len(self._tree_start)), dtype=np.int64)
        for _ in range(self._depth):
            at = self._tree_start + node
            node = 2 * node + 1 + (flat[row_start + self._feature[at]] > self._split[at])
        leaves = (self._tree_start // self._width) * (self._width + 1) + node - self._width
        return self._init + self._leaf[leaves].sum(axis=1)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.raw_score(features)))

    @staticmethod
    def _hand_features(pairs: list[tuple[str, str]], cosines) -> np.ndarray:
        return np.asarray([pair_features(a, b, float(cosine)) for (a, b), cosine in zip(pairs, cosines, strict=True)],
                          dtype=np.float64).reshape(len(pairs), len(FEATURE_NAMES))

    def feature_matrix(self, pairs: list[tuple[str, str]], cosines) -> np.ndarray:
        """The trees' input for (cached, new) pairs: the hand-built features, then the cross-encoder's
        log-odds (each pair read on its own, see ``PairCrossEncoder``)."""
        return np.c_[self._hand_features(pairs, cosines), self.cross_encoder.logits(pairs).astype(np.float64)]

    def scores(self, cached_texts: list[str], new_text: str, cosines: list[float]) -> np.ndarray:
        """Probabilities for several cached questions against one new one, in one pass of the trees."""
        return self.score_features(self.feature_matrix([(cached, new_text) for cached in cached_texts], cosines))

    def best_match(self, cached_texts: list[str], new_text: str, cosines: list[float]) -> tuple[int, float] | None:
        """The candidate that scores highest, if it reaches the threshold: (index, probability); else None.

        The same answer as ``scores`` and an argmax, for less: the trees are monotonic in the
        cross-encoder's log-odds, so each candidate's score with that log-odds above every split is an
        upper bound that costs no model run. Candidates whose bound is under the threshold (usually a
        different number, name or "not") are never read by the cross-encoder, and the rest are read best
        bound first until no bound can beat the best score found."""
        hand = self._hand_features([(cached, new_text) for cached in cached_texts], cosines)
        bounds = self.score_features(np.c_[hand, np.full(len(hand), 1e6)])  # above every split on it
        best: tuple[int, float] | None = None
        for i in np.argsort(-bounds, kind="stable"):
            if bounds[i] < self.threshold or (best is not None and bounds[i] < best[1]):
                break
            logit = self.cross_encoder.logits([(cached_texts[i], new_text)])[0]
            score = float(self.score_features(np.r_[hand[i], logit][None, :])[0])
            # Ties go to the earlier candidate (the nearer one), as an argmax over ``scores`` would.
            if score >= self.threshold and (best is None or score > best[1] or (score == best[1] and i < best[0])):
                best = (int(i), score)
        return best

    def score(self, cached_text: str, new_text: str, cosine: float) -> float:
        return float(self.scores([cached_text], new_text, [cosine])[0])

    def accepts(self, cached_text: str, new_text: str, cosine: float) -> bool:
        if cosine < self.min_cosine or math.isnan(cosine):
            return False
        return self.score(cached_text, new_text, cosine) >= self.threshold
