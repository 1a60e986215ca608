"""Word opposites, as stems: what tells "Is time travel possible?" from "... impossible?".

The cache verifier flags a pair of questions when a stem found only in one has its opposite only in
the other, with two lists: its own short hand list (``cache_verifier.HAND_OPPOSITES``) and WordNet's,
``store/assets/antonyms.tsv``, built by ``bench/build_antonym_lexicon.py`` (one pair of stems per
line). The verifier's trees were trained with one exact version of that file, so the verifier's spec
records its sha256 and refuses a different file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

LEXICON_FILE = Path(__file__).parent / "assets" / "antonyms.tsv"


class AntonymLexicon:
    """Pairs of opposite stems. ``sha256``: of the file they came from, if any."""

    def __init__(self, pairs: Iterable[tuple[str, str]], sha256: str | None = None):
        opposites: dict[str, set[str]] = {}
        for a, b in pairs:
            opposites.setdefault(a, set()).add(b)
            opposites.setdefault(b, set()).add(a)
        self._opposites = {word: frozenset(others) for word, others in opposites.items()}
        self.sha256 = sha256

    @classmethod
    def from_file(cls, path: Path = LEXICON_FILE) -> AntonymLexicon:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"the cache verifier's word list {path} cannot be read ({exc}); "
                             "reinstall localllm") from exc
        pairs = (tuple(line.split("\t")) for line in data.decode("utf-8").splitlines())
        return cls(pairs, sha256=hashlib.sha256(data).hexdigest())

    def __len__(self) -> int:
        return sum(len(v) for v in self._opposites.values()) // 2

    def split(self, only_a: set[str], only_b: set[str]) -> bool:
        """Whether a stem found only in one question has its opposite only in the other."""
        if len(only_a) > len(only_b):
            only_a, only_b = only_b, only_a
        return any(self._opposites.get(stem, frozenset()) & only_b for stem in only_a)


@lru_cache(maxsize=2)
def load_lexicon(path: Path = LEXICON_FILE) -> AntonymLexicon:
    return AntonymLexicon.from_file(path)
