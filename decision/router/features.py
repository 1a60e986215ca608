"""Cheap features of a prompt's text for the complexity router.

The embedding says what a prompt is about; these say how it is built: how long it
is, how much arithmetic it carries, whether it asks to pick among options that are
combinations of each other ("Wrong, Not wrong"), whether it chains steps, whether
it holds code or a non-Latin script. Topic alone transfers badly to subjects the
router never saw; structure transfers better, so the two go in side by side.

One function, ``prompt_features``, returns a float32 vector in the order of
``FEATURE_NAMES``. Training (``bench/train_router.py``) and the daemon both call it,
so the two cannot drift. Everything is a few regular expressions and set look-ups
over at most ``MAX_CHARS`` characters: about 0.3 ms for a typical prompt, 1.2 ms at
most, whatever the prompt's length.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

# Lengths are measured on the whole text, everything else on a window of it: its head (the setting)
# and its tail (the question and its options), which bounds the cost of a pasted document at about
# a millisecond without changing how an ordinary question (under MAX_CHARS) scores.
MAX_CHARS = 2_000
HEAD_CHARS, TAIL_CHARS = 1_200, 800

# Few, simple patterns: an alternation of words or a look-around costs Python's regex engine several
# times what a character class does, so words are matched once and looked up in sets below.
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_UPPER = re.compile(r"[A-Z]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NON_LATIN_LETTERS = re.compile(r"[^\W\d_\x00-\u024f]+")  # letters beyond Latin Extended-B: another script
_FRACTION = re.compile(r"\d ?/ ?\d|%")
_SENTENCE = re.compile(r"[.!?](?:\s|$)")
_OPTION = re.compile(r"^[ \t]*\(?([A-Ja-j])[.)][ \t]+(.+)$", re.MULTILINE)
_MATH_SYMBOL = re.compile(r"[=+*/^<>≤≥≠±×÷√∑∫∞πθλμσ∈∀∃→⇒↔∧∨¬]")
_LATEX = re.compile(r"\\(?:frac|sqrt|sum|int|cdot|times|left|right|alpha|beta|theta|pi|leq|geq|mathbb)"
                    r"|\$[^$\n]{0,60}[\\^_=][^$\n]{0,60}\$")  # inline math, not two prices
_FUNCTION_CALL = re.compile(r"(?<!\w)[a-zA-Z]\(")
_ENUMERATION = re.compile(r"(?:Statement|Scenario|Premise|Step|Part) ?\d"
                          r"|\n[ \t]*(?:\d{1,2}|I{1,3}|IV|VI{0,3})[.)][ \t]")
_CODE_SIGNS = ("```", "==", "!=", "->", "=>", "++", "&&", "||", ";\n", "{\n", "}\n", "\n    ", "\n\t", "#include")
_CODE_WORDS = frozenset("def return elif lambda import const void struct printf println self nullptr SELECT FROM "
                        "WHERE var let fn func".split())
_SINGLE_LETTER_WORDS = frozenset("a A I".split())  # articles and "I": not variables
_PASSAGE_CUES = ("passage", "following information", "following excerpt", "following text", "following quote",
                 "following argument", "following statement", "refers to", "according to the", "excerpt")
# Cue words are counted by set membership over the lower-cased words: an alternation regex with
# IGNORECASE costs ten times as much.
_NEGATION_CUES = frozenset("not except least never false incorrect cannot".split())
_REASONING_CUES = frozenset(
    "if then suppose assume assuming given therefore implies hence must valid argument conclude conclusion follows "
    "prove true false consistent all some none only both neither either whether unless".split())
_STEP_CUES = frozenset(
    "each every per total remaining rest left after before then twice half third quarter double triple times more "
    "less fewer than many much altogether combined average difference ratio percent profit cost costs spend spends "
    "earn earns rate speed hour hours minute minutes day days week weeks year years".split())
_INSTRUCTION_CUES = frozenset(
    "explain describe compare analyse analyze derive prove calculate compute solve evaluate write implement design "
    "justify discuss summarise summarize list identify determine estimate find show".split())
_UNIT_WORDS = frozenset("dollar dollars cent cents euro euros percent kg km mile miles meter meters gram grams liter "
                        "liters pound pounds ounce ounces feet inch inches".split())
_FRACTION_WORDS = frozenset("half halves third thirds quarter quarters fourth fifth fifths tenth percent percentage "
                            "twice double triple thrice".split())
_NUMBER_WORDS = frozenset("two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty "
                          "fifty hundred thousand million dozen once twice thrice".split())
_MONEY_SIGN = re.compile(r"[$€£¥₹%]")
_QUOTE = re.compile(r"[\"“”«»]")
_COMBINATION_WORDS = frozenset("true false wrong not only and both neither none all yes no i ii iii iv".split())

FEATURE_NAMES = [
    "log_chars", "log_words", "log_lines", "log_sentences", "words_per_sentence", "mean_word_length",
    "long_word_share", "distinct_word_share", "capitalised_share", "upper_share", "non_ascii_share",
    "non_latin_letter_share", "question_marks", "digit_share", "log_numbers", "log_distinct_numbers",
    "log_max_number", "decimals", "number_words", "fractions", "commas_per_sentence", "units_or_money",
    "math_symbols", "latex", "variables", "function_calls", "code_markers", "enumerations", "pipe_claims",
    "negation_cues", "reasoning_cues", "step_cues", "instruction_cues", "quotes", "blanks", "passage_cue",
    "option_count", "log_option_chars", "option_stem_share", "option_overlap", "option_combination_words",
    "option_numeric_share", "option_length_spread",
]


def _log(x: float) -> float:
    return math.log1p(max(x, 0.0))


def _options(text: str) -> list[str]:
    """The lettered answer options (A. .. B. ..), when they run in order from A; else none."""
    found = _OPTION.findall(text)
    options: list[str] = []
    for letter, body in found:
        index = ord(letter.upper()) - ord("A")
        if index == len(options):
            options.append(body.strip())
        elif index == 0:  # a new list starts: keep the latest (the question's own options come last)
            options = [body.strip()]
    return options if len(options) >= 2 else []


def _option_features(options: list[str], text_chars: int) -> list[float]:
    if not options:
        return [0.0] * 7
    words = [set(w.lower() for w in _WORD.findall(o)) for o in options]
    pairs = [(a, b) for i, a in enumerate(words) for b in words[i + 1:]]
    # Options built from the same few tokens ("Wrong, Not wrong", "I and III only") ask the model
    # to combine several judgements: the shape on which a weak model falls behind most.
    overlap = sum(len(a & b) / len(a | b) for a, b in pairs if a | b) / max(len(pairs), 1)
    all_words = [w for ws in words for w in ws]
    combination = sum(w in _COMBINATION_WORDS for w in all_words) / max(len(all_words), 1)
    numeric = sum(bool(re.fullmatch(r"[\s\d.,:;/()\-–+*^=%$−xX]+", o)) for o in options) / len(options)
    lengths = [len(o) for o in options]
    mean = sum(lengths) / len(lengths)
    spread = (max(lengths) - min(lengths)) / max(mean, 1.0)
    return [float(len(options)), _log(mean), sum(lengths) / max(text_chars, 1), overlap, combination, numeric,
            spread]


def _count(counts: Counter, vocabulary: frozenset[str]) -> int:
    # Intersect first: one C-level set operation instead of a Python loop over every word.
    return sum(counts[w] for w in vocabulary.intersection(counts))


def _found(pattern: re.Pattern, text: str, needles: str) -> int:
    """Matches of ``pattern``, skipping the scan when none of the characters it needs occurs."""
    return len(pattern.findall(text)) if any(c in text for c in needles) else 0


def _window(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-TAIL_CHARS:]


def _run_length(pattern: re.Pattern, text: str) -> int:
    return sum(map(len, pattern.findall(text)))


def prompt_features(text: str) -> np.ndarray:
    """The feature vector of one prompt, float32, in the order of ``FEATURE_NAMES``."""
    total_chars = len(text)
    view = _window(text)
    chars = max(len(view), 1)
    words = _WORD.findall(view)
    lower = Counter(w.lower() for w in words)
    n_words = max(len(words), 1)
    numbers = _NUMBER.findall(view)
    largest = max((float(n.replace(",", "")) for n in numbers if n.count(".") <= 1), default=0.0)
    sentences = max(len(_SENTENCE.findall(view)), 1)
    n_letters = max(sum(map(len, words)), 1)
    if view.isascii():  # the common case
        non_ascii = non_latin = 0
    else:
        non_ascii = _run_length(_NON_ASCII, view)
        non_latin = _run_length(_NON_LATIN_LETTERS, view)
    options = _options(view)
    per_100_words = 100.0 / n_words

    vector = [
        _log(total_chars),
        _log(len(words)),
        _log(view.count("\n")),
        _log(sentences),
        len(words) / sentences,
        n_letters / n_words,
        sum(len(w) >= 9 for w in words) / n_words,
        len(lower) / n_words,
        sum(w[0].isupper() for w in words) / n_words,
        _run_length(_UPPER, view) / n_letters,
        non_ascii / chars,
        non_latin / n_letters,
        float(min(view.count("?"), 10)),
        sum(c.isdigit() for n in numbers for c in n) / chars,
        _log(len(numbers)),
        _log(len(set(numbers))),
        math.log10(1.0 + min(largest, 1e15)),
        _log(sum(n.count(".") for n in numbers)),
        _log(_count(lower, _NUMBER_WORDS)),
        # Fractions and percentages, and clauses per sentence: the word problems a weak model gets wrong
        # chain more partial quantities into each sentence.
        _log(_found(_FRACTION, view, "/%") + _count(lower, _FRACTION_WORDS)),
        view.count(",") / sentences,
        _log(len(_MONEY_SIGN.findall(view)) + _count(lower, _UNIT_WORDS)),
        _log(len(_MATH_SYMBOL.findall(view)) + view.count(" - ")),
        _log(_found(_LATEX, view, "\\$")),
        _log(sum(len(w) == 1 and w not in _SINGLE_LETTER_WORDS for w in words)),
        _log(_found(_FUNCTION_CALL, view, "(")),
        _log(sum(view.count(sign) for sign in _CODE_SIGNS) + _count(Counter(words), _CODE_WORDS)),
        _log(_found(_ENUMERATION, view, "\nSP")),
        _log(view.count("|")),
        _count(lower, _NEGATION_CUES) * per_100_words,
        _count(lower, _REASONING_CUES) * per_100_words,
        _count(lower, _STEP_CUES) * per_100_words,
        _count(lower, _INSTRUCTION_CUES) * per_100_words,
        _log(_found(_QUOTE, view, "\"“”«»")),
        float("___" in view),
        float(any(cue in view.lower() for cue in _PASSAGE_CUES)),
        *_option_features(options, chars),
    ]
    return np.asarray(vector, dtype=np.float32)
