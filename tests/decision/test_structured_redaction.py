"""Redacting the structured conversation an upstream with tools is sent: findings made on the rendered
conversation land in content, tool results and call arguments (strings, numbers, escaped values), and a
value that cannot be placed stops the request."""

from __future__ import annotations

import json

import pytest

from localllm.daemon.requests import ChatCompletionRequest, parse_request
from localllm.decision.guard.structured_redaction import RedactionIncomplete, redact_structured
from localllm.decision.guard.vault import RedactionVault
from tests.decision.test_redaction_vault import spans

CARD = 4111111111111111


def conversation(note: str = 'He said "hi"') -> ChatCompletionRequest:
    return parse_request(ChatCompletionRequest, {"model": "m", "messages": [
        {"role": "user", "content": "Mail Bob Jones at bob@example.com."},
        {"role": "assistant", "content": "Looking Bob Jones up.", "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "lookup", "arguments": json.dumps({"who": "Bob Jones", "card": CARD,
                                                                 "note": note})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Bob Jones, bob@example.com, VIP"},
    ]})


def redact(request: ChatCompletionRequest, values: dict[str, str]) -> tuple[list[dict], RedactionVault]:
    rendered = request.template_messages()
    vault = RedactionVault()
    return redact_structured(vault, request.upstream_messages(), rendered, spans(rendered, values)), vault


def test_findings_land_in_content_tool_results_and_arguments():
    sent, vault = redact(conversation(), {"Bob Jones": "PERSON", "bob@example.com": "EMAIL_ADDRESS",
                                          str(CARD): "CREDIT_CARD"})
    assert sent[0]["content"] == "Mail [PERSON_1] at [EMAIL_ADDRESS_1]."
    assert sent[1]["content"] == "Looking [PERSON_1] up."
    arguments = json.loads(sent[1]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"who": "[PERSON_1]", "card": "[CREDIT_CARD_1]", "note": 'He said "hi"'}
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "[PERSON_1], [EMAIL_ADDRESS_1], VIP"}
    assert vault.restore_json(sent[1]["tool_calls"][0]["function"]["arguments"]) == json.dumps(
        {"who": "Bob Jones", "card": str(CARD), "note": 'He said "hi"'})


def test_a_value_found_in_its_json_escaped_form_is_redacted_unescaped():
    # The rendered call holds the note JSON-escaped; the finding covers the escaped text.
    sent, _ = redact(conversation(note='Ask "Ann"'), {'Ask \\"Ann\\"': "PERSON"})
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"])["note"] == "[PERSON_1]"


def test_unfound_messages_are_sent_as_they_are():
    request = conversation()
    sent, _ = redact(request, {"bob@example.com": "EMAIL_ADDRESS"})
    assert sent[1] == request.upstream_messages()[1]


def test_a_value_that_cannot_be_placed_stops_the_request():
    request = conversation()
    rendered = request.template_messages()
    # A finding over the "Result of lookup: " prefix names a value that is nowhere in the structured message.
    wrong = spans(rendered, {"Result of lookup": "PERSON"})
    structured = request.upstream_messages()
    structured[2]["content"] = "Result of lookup was here"
    with pytest.raises(RedactionIncomplete):
        redact_structured(RedactionVault(), structured, rendered, wrong)
    with pytest.raises(RedactionIncomplete):
        redact_structured(RedactionVault(), structured[:2], rendered, [])
