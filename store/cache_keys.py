"""What a cached answer is keyed on: an exact scope, plus the last user turn.

The scope is everything that changes the answer besides the question itself:
model, endpoint, system prompt and every earlier turn, tools, response format,
and the sampling settings. It must match exactly; only the last user turn is
matched semantically.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

_SPACES = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s?!.。？！]+$")


@dataclass(frozen=True)
class CacheKey:
    scope: str     # scope_sha256 of everything that must match exactly
    question: str  # the last user turn, matched by meaning


def normalise_question(text: str) -> str:
    """Same-question-in-different-clothes: case, width, spacing, trailing punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _TRAILING.sub("", _SPACES.sub(" ", text).strip())


def text_sha256(text: str) -> str:
    return hashlib.sha256(normalise_question(text).encode("utf-8")).hexdigest()


def scope_sha256(scope: dict) -> str:
    return hashlib.sha256(json.dumps(scope, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def pack_vector(vector) -> bytes:
    import numpy as np

    return np.asarray(vector, dtype="<f4").tobytes()


def unpack_vector(blob: bytes):
    import numpy as np

    return np.frombuffer(blob, dtype="<f4")
