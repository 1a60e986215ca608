"""Redaction round trips: placeholders out, values back, also across split stream chunks."""

from __future__ import annotations

import random
import re

from localllm.decision.guard.scan import Finding
from localllm.decision.guard.vault import RedactionVault


def spans(messages, wanted: dict[str, str]) -> list[Finding]:
    """Findings for every occurrence of each value (value -> type)."""
    found = []
    for index, message in enumerate(messages):
        for value, entity_type in wanted.items():
            for match in re.finditer(re.escape(value), message["content"]):
                found.append(Finding(index, entity_type, "person", match.start(), match.end(), 1.0))
    return found


CONVERSATION = [
    {"role": "system", "content": "You help Alice Smith with email."},
    {"role": "user", "content": "Write to bob@example.com and tell Bob Jones that Alice Smith says hi."},
    {"role": "assistant", "content": "Sure. Anything else for Bob Jones?"},
    {"role": "user", "content": "Also cc carol@example.org."},
]
VALUES = {"Alice Smith": "PERSON", "Bob Jones": "PERSON", "bob@example.com": "EMAIL_ADDRESS",
          "carol@example.org": "EMAIL_ADDRESS"}


def test_same_value_same_placeholder_across_the_conversation_and_values_never_sent():
    vault = RedactionVault()
    sent = vault.redact(CONVERSATION, spans(CONVERSATION, VALUES))
    text = "\n".join(m["content"] for m in sent)
    for value in VALUES:
        assert value not in text
    assert sent[0]["content"] == "You help [PERSON_1] with email."
    assert sent[1]["content"] == "Write to [EMAIL_ADDRESS_1] and tell [PERSON_2] that [PERSON_1] says hi."
    assert sent[2]["content"] == "Sure. Anything else for [PERSON_2]?"
    assert sent[3]["content"] == "Also cc [EMAIL_ADDRESS_2]."
    assert [m["role"] for m in sent] == [m["role"] for m in CONVERSATION]
    assert CONVERSATION[0]["content"] == "You help Alice Smith with email."  # input untouched
    answer = "Dear [PERSON_2], [PERSON_1] says hi. (cc [EMAIL_ADDRESS_2])"
    assert vault.restore(answer) == "Dear Bob Jones, Alice Smith says hi. (cc carol@example.org)"


def test_the_same_conversation_redacts_the_same_way_every_turn():
    first = RedactionVault().redact(CONVERSATION[:2], spans(CONVERSATION[:2], VALUES))
    second = RedactionVault().redact(CONVERSATION, spans(CONVERSATION, VALUES))
    assert second[:2] == first


def test_a_placeholder_the_user_wrote_is_never_reused_or_restored():
    messages = [{"role": "user", "content": "Is [PERSON_1] a template? Ask Dana Scully."}]
    vault = RedactionVault()
    sent = vault.redact(messages, spans(messages, {"Dana Scully": "PERSON"}))
    assert sent[0]["content"] == "Is [PERSON_1] a template? Ask [PERSON_2]."
    assert vault.restore("[PERSON_1] and [PERSON_2]") == "[PERSON_1] and Dana Scully"


def test_placeholders_from_another_request_do_not_resolve():
    one, two = RedactionVault(), RedactionVault()
    one.redact(CONVERSATION, spans(CONVERSATION, VALUES))
    messages = [{"role": "user", "content": "hello Eve Polastri"}]
    two.redact(messages, spans(messages, {"Eve Polastri": "PERSON"}))
    assert two.restore("[PERSON_1] [PERSON_2] [EMAIL_ADDRESS_1]") == "Eve Polastri [PERSON_2] [EMAIL_ADDRESS_1]"


def test_stream_restore_with_placeholders_split_at_every_position():
    vault = RedactionVault()
    vault.redact(CONVERSATION, spans(CONVERSATION, VALUES))
    answer = "Hi [PERSON_2]! [PERSON_1] wrote to [EMAIL_ADDRESS_1]. Array[0] and [NOTE] stay [x]."
    expected = "Hi Bob Jones! Alice Smith wrote to bob@example.com. Array[0] and [NOTE] stay [x]."
    for cut in range(1, len(answer)):
        restorer = vault.stream_restorer()
        out = restorer.feed(answer[:cut]) + restorer.feed(answer[cut:]) + restorer.flush()
        assert out == expected, cut
    rng = random.Random(7)
    for _ in range(200):
        restorer = vault.stream_restorer()
        cuts = sorted(rng.sample(range(1, len(answer)), 6))
        pieces = [answer[a:b] for a, b in zip([0, *cuts], [*cuts, len(answer)])]
        out = "".join(restorer.feed(piece) for piece in pieces) + restorer.flush()
        assert out == expected


def test_stream_restore_one_character_at_a_time_and_a_dangling_bracket_at_the_end():
    vault = RedactionVault()
    vault.redact(CONVERSATION, spans(CONVERSATION, VALUES))
    restorer = vault.stream_restorer()
    answer = "[PERSON_1][PERSON_2] ends with [PERS"
    out = "".join(restorer.feed(ch) for ch in answer) + restorer.flush()
    assert out == "Alice SmithBob Jones ends with [PERS"


def test_nothing_is_held_back_when_nothing_was_redacted():
    vault = RedactionVault()
    vault.redact([{"role": "user", "content": "plain"}], [])
    restorer = vault.stream_restorer()
    assert restorer.feed("a [PERS") == "a [PERS"
