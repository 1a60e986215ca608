"""spaCy's greedy entity decoding, done in a few numpy operations instead of one C step per token.

spaCy's entity recognizer reads a document left to right, one move per token (Begin, In, Last,
Unit or Out of an entity, for each label). Before every move its C loop scores all moves from
three token features (the current token; the entity's first token and the previous token, both
only while an entity is open) and takes the best valid one. On this machine that loop is about
8 ms of a 1,000-character scan: ~38 us a token, a quarter of it one BLIS call per token.

Outside an entity, the only feature that changes from token to token is the current token, so
those scores do not depend on earlier moves: they are computed for every token in one matrix
product, and a token's best valid move there is read off directly. Only the tokens inside an
entity (a handful per prompt) are scored one at a time. The arithmetic is spaCy's: the same
precomputed feature vectors, summed in the same order, the same maxout, output layer, masking of
unseen classes, validity rules and first-best tie-break (``spacy/pipeline/_parser_internals/``
``ner.pyx``, ``_state.pxd``, ``ml/parser_model.pyx``). Only the output layer's matrix product
rounds differently (numpy's BLAS against BLIS); ``tests/decision/test_entity_decoder.py`` checks
that both find the same entities in every sentence of the development data and in long prompts.

Documents here are fresh from the tokenizer (no preset entities, no sentence boundaries from a
parser), which is what the guard gives it; the validity rules for preset annotations are not
needed and not implemented, so a document that carries any is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# spaCy's move names: "B-PERSON", "I-PERSON", "L-PERSON", "U-PERSON", "O" (and "U-", never valid here).
_BEGIN, _IN, _LAST, _UNIT, _OUT = "B", "I", "L", "U", "O"


@dataclass(frozen=True)
class TokenEntity:
    label: str
    start: int  # token offsets, end exclusive
    end: int


class GreedyEntityDecoder:
    """``decoder(doc)`` -> the entities spaCy's ``recognizer(doc)`` would set, as token spans.

    Raises ``ValueError`` at construction for a recognizer it does not reproduce (another
    transition system, feature set or output layout); callers then use spaCy's own loop.
    ``encoder(doc)`` gives the precomputed token features (padding row first); by default the
    recognizer's own thinc layers compute them (``entity_encoder`` has a faster one).
    """

    def __init__(self, recognizer: Any, encoder: Callable[[Any], np.ndarray] | None = None):
        from spacy.attrs import ENT_IOB, IS_SPACE, SENT_START
        from spacy.pipeline._parser_internals.ner import BiluoPushDown

        self._token_attrs = [IS_SPACE, SENT_START, ENT_IOB]

        model = recognizer.model
        if not isinstance(recognizer.moves, BiluoPushDown):
            raise ValueError(f"not an entity recognizer's transition system: {type(recognizer.moves).__name__}")
        if not model.attrs.get("has_upper", False):
            raise ValueError("the model has no hidden output layer")
        tok2vec, lower = model.get_ref("tok2vec"), model.get_ref("lower")
        if lower.get_dim("nF") != 3:
            raise ValueError(f"expected 3 state features (an entity recognizer's), got {lower.get_dim('nF')}")
        self._encode = encoder or (lambda doc: lower.predict(tok2vec.predict([doc])))
        upper = model.get_ref("upper")
        self._weights_t = np.ascontiguousarray(upper.get_param("W").T)  # (hidden, moves)
        self._bias = upper.get_param("b")
        self._feature_bias = lower.get_param("b")  # (hidden, pieces)
        n_moves = recognizer.moves.n_moves
        if self._weights_t.shape[1] != n_moves:
            raise ValueError(f"the output layer scores {self._weights_t.shape[1]} moves, the system has {n_moves}")

        unseen = sorted(model.attrs.get("unseen_classes") or ())
        self._unseen = np.array(unseen, dtype=np.intp)
        names = [recognizer.moves.get_class_name(i) for i in range(n_moves)]
        actions = [name if name == _OUT else name.split("-", 1)[0] for name in names]
        self._labels = [name.split("-", 1)[1] if "-" in name else "" for name in names]
        if set(actions) - {_BEGIN, _IN, _LAST, _UNIT, _OUT}:
            raise ValueError(f"unexpected moves {sorted(set(actions))}")
        labelled = np.array([label != "" for label in self._labels])
        self._is_out = np.array([a == _OUT for a in actions])
        self._is_unit = np.array([a == _UNIT for a in actions]) & labelled
        self._is_begin = np.array([a == _BEGIN for a in actions]) & labelled
        self._actions = actions
        # Inside an entity of label X, only I-X and L-X can be valid.
        self._in_move = {self._labels[i]: i for i, a in enumerate(actions) if a == _IN and labelled[i]}
        self._last_move = {self._labels[i]: i for i, a in enumerate(actions) if a == _LAST and labelled[i]}
        can_close = self._in_move.keys() & self._last_move.keys()
        stranded = {self._labels[i] for i in np.flatnonzero(self._is_begin)} - can_close
        if stranded:
            raise ValueError(f"labels that can begin an entity but not continue or end one: {sorted(stranded)}")

    def __call__(self, doc: Any) -> list[TokenEntity]:
        n = len(doc)
        if n == 0:
            return []
        token_attrs = doc.to_array(self._token_attrs)
        if token_attrs[:, 2].any():
            raise ValueError("the document already carries entity annotations")
        is_space = token_attrs[:, 0].astype(bool)
        # B_(1).sent_start == 1 stops an entity from running into the next token.
        next_starts_sentence = np.zeros(n, dtype=bool)
        next_starts_sentence[:-1] = token_attrs[1:, 1] == 1

        # (n + 1, 3 features, hidden, pieces); row 0 is the padding for an absent feature.
        features = self._encode(doc)

        # Outside any entity the state's features are (this token, absent, absent).
        outside = self._scores(features[1:, 0] + features[0, 1] + features[0, 2])
        valid = np.broadcast_to(self._is_out, outside.shape).copy()
        valid |= self._is_unit & ~is_space[:, None]
        can_begin = ~is_space & ~next_starts_sentence
        can_begin[-1] = False  # the last token can only be U or O
        valid |= self._is_begin & can_begin[:, None]
        best_outside = np.where(valid, outside, -np.inf).argmax(axis=1).tolist()

        entities: list[TokenEntity] = []
        i = 0
        while i < n:
            move = best_outside[i]
            action = self._actions[move]
            if action == _UNIT:
                entities.append(TokenEntity(self._labels[move], i, i + 1))
            elif action == _BEGIN:
                label, start = self._labels[move], i
                i = self._close_entity(features, label, start, n, next_starts_sentence)
                entities.append(TokenEntity(label, start, i + 1))
            i += 1
        return entities

    def _close_entity(self, features: np.ndarray, label: str, start: int, n: int,
                      next_starts_sentence: np.ndarray) -> int:
        """Walk an entity opened at ``start``: the index of the token its Last move lands on."""
        in_move, last_move = self._in_move[label], self._last_move[label]
        i = start + 1
        while True:
            # Inside an entity the features are (this token, the entity's first, the previous one).
            scores = self._scores(features[i + 1, 0] + features[start + 1, 1] + features[i, 2])
            can_continue = i < n - 1 and not next_starts_sentence[i]
            # spaCy's arg-max keeps the first of equal scores, in move order.
            if can_continue and (scores[in_move] > scores[last_move]
                                 or (scores[in_move] == scores[last_move] and in_move < last_move)):
                i += 1
                continue
            return i

    def _scores(self, summed_features: np.ndarray) -> np.ndarray:
        """Move scores from summed state features, (..., hidden, pieces) -> (..., moves)."""
        pieces = summed_features + self._feature_bias
        hidden = pieces[..., 0]
        for p in range(1, pieces.shape[-1]):  # maxout; np.maximum is ~3x faster than .max() on 2 pieces
            hidden = np.maximum(hidden, pieces[..., p])
        scores = hidden @ self._weights_t + self._bias
        if self._unseen.size:
            scores[..., self._unseen] = scores.min(axis=-1, keepdims=True)
        return scores
