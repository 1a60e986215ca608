"""Scan every message of a request (all roles, tool results too) for sensitive data."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .entities import EntityClass, entity_class

if TYPE_CHECKING:
    from .detector import SensitiveDataDetector


@dataclass(frozen=True, slots=True)
class Finding:
    """A sensitive value in ``messages[message_index]["content"][start:end]``. Never holds the value."""

    message_index: int
    entity_type: str
    entity_class: EntityClass
    start: int
    end: int
    score: float

    def describe(self) -> dict:
        return {"message_index": self.message_index, "type": self.entity_type, "class": self.entity_class,
                "start": self.start, "end": self.end, "score": round(self.score, 3)}


def count_types(findings: Sequence[Finding]) -> dict[str, int]:
    return dict(sorted(Counter(f.entity_type for f in findings).items()))


class RequestScanner:
    """Runs the detector over whole requests, off the event loop."""

    def __init__(self, detector: SensitiveDataDetector):
        self.detector = detector

    def scan_messages(self, messages: Sequence[dict]) -> list[Finding]:
        findings = []
        for index, message in enumerate(messages):
            content = message.get("content") or ""
            for span in self.detector.scan(content):
                findings.append(Finding(index, span.entity_type, entity_class(span.entity_type), span.start,
                                        span.end, span.score))
        return findings

    async def scan(self, messages: Sequence[dict]) -> list[Finding]:
        return await asyncio.get_running_loop().run_in_executor(None, self.scan_messages, messages)
