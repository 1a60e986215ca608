"""Clean near-misses for the semantic cache: a question and a copy that asks something else because one
decisive token changed (issue 20). A cache that serves the first question's answer to the second is
wrong, whatever the cosine similarity says.

Four kinds, one change each, made from real questions:
  number     a number changed (12 -> 13, 2016 -> 2017, "five" -> "six")
  entity     a proper noun swapped for another one seen in the same role in other questions
  negation   the first auxiliary negated or un-negated ("can" -> "can't", "isn't" -> "is")
  direction  a direction word swapped for its opposite (best/worst, buy/sell, before/after, ...)

``unseen_direction_pairs(questions)`` makes direction near-misses from a second list of opposites
(possible/impossible, top/bottom, ask/answer, ...) that shares no pair with the first nor with the
verifier's own hand list (``cache_verifier.HAND_OPPOSITES``). The verifier and its cross-encoder are
trained on near-misses from the first list only, so these test whether they learned "an opposite
changes the question" or only the words they were shown.

Deterministic for a seed. ``near_miss_pairs(questions)`` gives at most one pair per question, so
questions held out by group give held-out near-misses.

    python bench/near_miss_pairs.py [--data PATH] [--limit N]   # prints a sample
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

DIRECTIONS = [tuple(p.split("/")) for p in (
    "best/worst better/worse buy/sell buying/selling bought/sold before/after increase/decrease increasing/decreasing "
    "increased/decreased rise/fall higher/lower highest/lowest more/less most/least maximum/minimum max/min "
    "largest/smallest biggest/smallest bigger/smaller larger/smaller up/down upgrade/downgrade import/export "
    "imports/exports advantages/disadvantages advantage/disadvantage pros/cons strongest/weakest "
    "stronger/weaker fastest/slowest faster/slower cheapest/most_expensive cheaper/more_expensive "
    "easiest/hardest easier/harder gain/lose gaining/losing win/lose winning/losing start/stop starting/stopping "
    "open/close opening/closing add/remove adding/removing enable/disable first/last early/late earliest/latest "
    "good/bad positive/negative rich/poor richest/poorest safest/most_dangerous safe/dangerous legal/illegal "
    "male/female men/women man/woman boys/girls boy/girl husband/wife father/mother son/daughter "
    "north/south east/west love/hate like/dislike right/wrong true/false hot/cold old/new oldest/newest "
    "inside/outside input/output online/offline private/public above/below over/under ascending/descending "
    "encrypt/decrypt upload/download uploading/downloading send/receive sending/receiving lend/borrow "
    "teacher/student employer/employee debit/credit").split()]
_DIRECTION = {a: b for a, b in DIRECTIONS} | {b: a for a, b in DIRECTIONS}
# Never used for training: no word here is in DIRECTIONS, no pair in the verifier's HAND_OPPOSITES.
UNSEEN_DIRECTIONS = [tuple(p.split("/")) for p in (
    "possible/impossible allowed/banned allow/forbid ask/answer asked/answered top/bottom give/take gave/took "
    "given/taken always/never push/pull enter/exit arrive/leave arrival/departure accept/reject "
    "accepted/rejected agree/disagree include/exclude including/excluding success/failure "
    "successful/unsuccessful pass/fail passed/failed happy/sad happiest/saddest summer/winter "
    "day/night morning/evening thick/thin wide/narrow deep/shallow longest/shortest longer/shorter "
    "teach/learn teaching/learning buyer/seller hire/fire hiring/firing cause/effect causes/effects "
    "attack/defend offense/defense friend/enemy friends/enemies strength/weakness strengths/weaknesses "
    "remember/forget appear/disappear visible/invisible honest/dishonest ethical/unethical healthy/unhealthy "
    "normal/abnormal common/rare natural/artificial mental/physical internal/external front/back "
    "forward/backward parent/child parents/children king/queen uncle/aunt sunrise/sunset "
    "birth/death alive/dead war/peace ancient/modern beginning/end beginner/expert "
    "amateur/professional full/empty wet/dry clean/dirty optimistic/pessimistic "
    "capitalism/socialism profit/loss profits/losses assets/liabilities supply/demand "
    "vertical/horizontal odd/even rural/urban domestic/foreign local/global majority/minority "
    "freezing/boiling inflation/deflation").split()]
_UNSEEN_DIRECTION = {a: b for a, b in UNSEEN_DIRECTIONS} | {b: a for a, b in UNSEEN_DIRECTIONS}
NUMBER_WORDS = "two three four five six seven eight nine ten eleven twelve".split()
_CONTRACTED = {"isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were", "can't": "can",
               "couldn't": "could", "shouldn't": "should", "wouldn't": "would", "won't": "will", "doesn't": "does",
               "don't": "do", "didn't": "did", "hasn't": "has", "haven't": "have", "cannot": "can"}
_NEGATED = {plain: contracted for contracted, plain in _CONTRACTED.items() if contracted != "cannot"}
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’]*|\d+(?:[.,]\d+)*")
_FIRST_WORDS = frozenset("what why how when where which who whom whose is are can do does did should would will "
                         "i in if the a an my we you".split())


def _entities(question: str) -> list[re.Match]:
    """Capitalised words away from the start, not sentence-initial: the proper nouns of a question."""
    found = []
    for match in _TOKEN.finditer(question):
        word = match.group()
        before = question[:match.start()].rstrip()
        if not before or before[-1] in ".?!:;\"(":
            continue
        if word[0].isupper() and len(word) > 2 and word.lower() not in _FIRST_WORDS and word != "I":
            found.append(match)
    return found


def _replace(text: str, match: re.Match, new: str) -> str:
    return text[:match.start()] + new + text[match.end():]


def _number(question: str, rng: random.Random) -> str | None:
    for match in _TOKEN.finditer(question):
        word = match.group()
        if word[0].isdigit():
            digits = word.replace(",", "")
            if "." in digits:
                return None
            value = int(digits)
            return _replace(question, match, str(value + rng.choice((1, 2, 3, 5, 10)) if value < 1900 or value > 2100
                                                 else value + rng.choice((-2, -1, 1, 2))))
        if word.lower() in NUMBER_WORDS:
            others = [w for w in NUMBER_WORDS if w != word.lower()]
            new = rng.choice(others)
            return _replace(question, match, new.capitalize() if word[0].isupper() else new)
    return None


def _negation(question: str) -> str | None:
    """The first auxiliary among the first four words, contracted ("can" -> "can't") or uncontracted."""
    for match in list(_TOKEN.finditer(question))[:4]:
        word = match.group().replace("’", "'")
        lower = word.lower()
        if lower in _CONTRACTED:
            plain = _CONTRACTED[lower]
            return _replace(question, match, plain.capitalize() if word[0].isupper() else plain)
        if lower in _NEGATED:
            negated = _NEGATED[lower]
            return _replace(question, match, negated.capitalize() if word[0].isupper() else negated)
    return None


def _direction(question: str, opposites: dict[str, str] = _DIRECTION) -> str | None:
    for match in _TOKEN.finditer(question):
        word = match.group()
        opposite = opposites.get(word.lower())
        if opposite:
            opposite = opposite.replace("_", " ")
            return _replace(question, match, opposite.capitalize() if word[0].isupper() else opposite)
    return None


def _entity(question: str, pool: list[str], rng: random.Random) -> str | None:
    found = _entities(question)
    if not found or not pool:
        return None
    match = rng.choice(found)
    for _ in range(10):
        other = rng.choice(pool)
        if other.lower() != match.group().lower() and other.lower() not in question.lower():
            return _replace(question, match, other)
    return None


def entity_pool(questions: list[str]) -> list[str]:
    """Proper nouns that occur in at least two of ``questions``: real names, not typos."""
    counts: dict[str, int] = {}
    for question in questions:
        for word in {m.group() for m in _entities(question)}:
            counts[word] = counts.get(word, 0) + 1
    return sorted(word for word, n in counts.items() if n >= 2)


def near_miss_pairs(questions: list[str], seed: int = 7, pool: list[str] | None = None) -> list[dict]:
    """At most one near-miss per question: {"text_a", "text_b", "label": 0, "kind"}; the kinds in turn,
    each question trying the next kind that applies to it."""
    rng = random.Random(seed)
    pool = entity_pool(questions) if pool is None else pool
    makers = {"number": lambda q: _number(q, rng), "entity": lambda q: _entity(q, pool, rng),
              "negation": _negation, "direction": _direction}
    kinds = list(makers)
    pairs = []
    for i, question in enumerate(questions):
        start = i % len(kinds)
        for kind in kinds[start:] + kinds[:start]:
            changed = makers[kind](question)
            if changed and changed != question:
                pairs.append({"text_a": question, "text_b": changed, "label": 0, "kind": kind})
                break
    return pairs


def unseen_direction_pairs(questions: list[str]) -> list[dict]:
    """Direction near-misses from UNSEEN_DIRECTIONS, at most one per question, kind "unseen direction"."""
    pairs = []
    for question in questions:
        changed = _direction(question, _UNSEEN_DIRECTION)
        if changed and changed != question:
            pairs.append({"text_a": question, "text_b": changed, "label": 0, "kind": "unseen direction"})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path,
                        default=Path(__file__).resolve().parent.parent.parent / "shared/data/cache/qqp_dev.jsonl")
    parser.add_argument("--limit", type=int, default=12)
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.data.open(encoding="utf-8")]
    questions = sorted({r["text_a"] for r in rows} | {r["text_b"] for r in rows})
    pairs = near_miss_pairs(questions)
    by_kind: dict[str, int] = {}
    for pair in pairs:
        by_kind[pair["kind"]] = by_kind.get(pair["kind"], 0) + 1
    print(f"{len(pairs)} near-misses from {len(questions)} questions: {by_kind}")
    unseen = unseen_direction_pairs(questions)
    print(f"{len(unseen)} near-misses with direction words never trained on")
    for pair in random.Random(1).sample(pairs, args.limit) + random.Random(1).sample(unseen, args.limit // 2):
        print(f"  [{pair['kind']}] {pair['text_a']}\n  {' ' * (len(pair['kind']) + 2)} {pair['text_b']}")


if __name__ == "__main__":
    main()
