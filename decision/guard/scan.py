"""Scan every message of a request (all roles, tool results too) for sensitive data.

A chat client resends the whole conversation with every turn, so each message's
spans are remembered (by a hash of its text, never the text) and only new
messages are scanned: the tenth turn costs one message's scan, not ten.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localllm.decision.guard.entities import EntityClass, entity_class

if TYPE_CHECKING:
    from localllm.decision.guard.detector import SensitiveDataDetector
    from localllm.decision.guard.entities import Span

# Messages whose spans are remembered: a few hundred conversations' worth, a few hundred KiB.
SCANNED_MESSAGES_KEPT = 2048


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

    def __init__(self, detector: SensitiveDataDetector, *, remembered: int = SCANNED_MESSAGES_KEPT):
        self.detector = detector
        self._remembered = remembered
        self._spans_by_digest: OrderedDict[bytes, tuple[Span, ...]] = OrderedDict()
        self._lock = threading.Lock()  # scans run on executor threads

    def scan_messages(self, messages: Sequence[dict]) -> list[Finding]:
        findings = []
        for index, message in enumerate(messages):
            for span in self._spans(message.get("content") or ""):
                findings.append(Finding(index, span.entity_type, entity_class(span.entity_type), span.start,
                                        span.end, span.score))
        return findings

    def _spans(self, content: str) -> tuple[Span, ...]:
        if not content:
            return ()
        digest = hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._lock:
            spans = self._spans_by_digest.get(digest)
            if spans is not None:
                self._spans_by_digest.move_to_end(digest)
                return spans
        spans = tuple(self.detector.scan(content))
        with self._lock:
            self._spans_by_digest[digest] = spans
            if len(self._spans_by_digest) > self._remembered:
                self._spans_by_digest.popitem(last=False)
        return spans

    async def scan(self, messages: Sequence[dict]) -> list[Finding]:
        return await asyncio.get_running_loop().run_in_executor(None, self.scan_messages, messages)
