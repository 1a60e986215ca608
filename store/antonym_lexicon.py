"""Word opposites from WordNet, as stems: what tells "Is time travel possible?" from "... impossible?".

``store/assets/antonyms.tsv`` is built by ``bench/build_antonym_lexicon.py`` (one pair of stems per
line). The cache verifier's trees were trained with one exact version of it, so the verifier's spec
records its sha256 and refuses a different file.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

LEXICON_FILE = Path(__file__).parent / "assets" / "antonyms.tsv"


class AntonymLexicon:
    def __init__(self, path: Path = LEXICON_FILE):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"the cache verifier's word list {path} cannot be read ({exc}); "
                             "reinstall localllm") from exc
        self.sha256 = hashlib.sha256(data).hexdigest()
        opposites: dict[str, set[str]] = {}
        for line in data.decode("utf-8").splitlines():
            a, b = line.split("\t")
            opposites.setdefault(a, set()).add(b)
            opposites.setdefault(b, set()).add(a)
        self._opposites = {word: frozenset(others) for word, others in opposites.items()}

    def __len__(self) -> int:
        return sum(len(v) for v in self._opposites.values()) // 2

    def split(self, only_a: set[str], only_b: set[str]) -> bool:
        """Whether a stem found only in one question has its opposite only in the other."""
        if len(only_a) > len(only_b):
            only_a, only_b = only_b, only_a
        return any(self._opposites.get(stem, frozenset()) & only_b for stem in only_a)


@lru_cache(maxsize=2)
def load_lexicon(path: Path = LEXICON_FILE) -> AntonymLexicon:
    return AntonymLexicon(path)
