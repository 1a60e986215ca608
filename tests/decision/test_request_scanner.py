"""Whole-request scanning: every message, and a resent conversation scans only its new messages."""

from __future__ import annotations

from localllm.decision.guard.detector import SensitiveDataDetector
from localllm.decision.guard.scan import RequestScanner


class CountingDetector(SensitiveDataDetector):
    """The real rule-based detector, recording which texts it was asked to scan."""

    def __init__(self):
        super().__init__(ner=False)
        self.scanned: list[str] = []

    def scan(self, text):
        self.scanned.append(text)
        return super().scan(text)


TURNS = [
    {"role": "system", "content": "You help the billing team."},
    {"role": "user", "content": "Refund card 4111 1111 1111 1111, contact jane@example.com"},
    {"role": "assistant", "content": "Done. Anything else?"},
    {"role": "user", "content": "Also call +1 415-555-0100 about IBAN GB82WEST12345698765432."},
]


def describe(findings):
    return [(f.message_index, f.entity_type, f.start, f.end) for f in findings]


def test_resent_conversation_scans_only_new_messages_with_identical_findings():
    detector = CountingDetector()
    scanner = RequestScanner(detector)
    first = scanner.scan_messages(TURNS[:2])
    assert detector.scanned == [TURNS[0]["content"], TURNS[1]["content"]]
    text = TURNS[1]["content"]
    card, email = text.index("4111"), text.index("jane@")
    assert describe(first) == [(1, "CREDIT_CARD", card, card + 19), (1, "EMAIL_ADDRESS", email, len(text))]

    detector.scanned.clear()
    second = scanner.scan_messages(TURNS)
    assert detector.scanned == [TURNS[2]["content"], TURNS[3]["content"]]  # turns 0-1 remembered
    fresh = RequestScanner(SensitiveDataDetector(ner=False)).scan_messages(TURNS)
    assert describe(second) == describe(fresh)
    assert {f.entity_type for f in second if f.message_index == 3} == {"PHONE_NUMBER", "IBAN_CODE"}


def test_same_text_at_another_position_keeps_its_own_message_index():
    scanner = RequestScanner(CountingDetector())
    message = {"role": "user", "content": "mail bob@example.org"}
    findings = scanner.scan_messages([message, {"role": "assistant", "content": "ok"}, message])
    assert [(f.message_index, f.entity_type) for f in findings] == [(0, "EMAIL_ADDRESS"), (2, "EMAIL_ADDRESS")]


def test_remembered_messages_are_bounded_least_recently_used_first():
    detector = CountingDetector()
    scanner = RequestScanner(detector, remembered=2)
    texts = [{"role": "user", "content": f"message {i}"} for i in range(3)]
    scanner.scan_messages(texts[:2])
    scanner.scan_messages(texts[:1])  # message 0 is now the most recently used
    scanner.scan_messages(texts[2:])  # evicts message 1
    detector.scanned.clear()
    scanner.scan_messages([texts[0], texts[2]])
    assert detector.scanned == []
    scanner.scan_messages(texts[1:2])
    assert detector.scanned == ["message 1"]
