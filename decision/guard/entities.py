"""Entity types the guard finds, and the policy class each belongs to.

Policy is written per class (``secret``, ``person``, ...), detection per type
(``CREDIT_CARD``, ``US_SSN``, ...). Custom terms and patterns from the config
become types named ``CUSTOM_<NAME>`` in class ``custom``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EntityClass = Literal["secret", "financial", "government_id", "contact", "network", "person", "address",
                      "location", "organization", "custom"]
ENTITY_CLASSES: tuple[EntityClass, ...] = ("secret", "financial", "government_id", "contact", "network", "person",
                                           "address", "location", "organization", "custom")

ENTITY_CLASS_OF_TYPE: dict[str, EntityClass] = {
    # API keys and tokens, private keys, JWTs, passwords in URLs and connection strings,
    # high-entropy values in key=value pairs.
    "SECRET": "secret",
    "CREDIT_CARD": "financial",
    "IBAN_CODE": "financial",
    "US_BANK_NUMBER": "financial",
    "CRYPTO": "financial",
    "US_SSN": "government_id",
    "US_ITIN": "government_id",
    "US_PASSPORT": "government_id",
    "US_DRIVER_LICENSE": "government_id",
    "UK_NHS": "government_id",
    "EMAIL_ADDRESS": "contact",
    "PHONE_NUMBER": "contact",
    "IP_ADDRESS": "network",
    "MAC_ADDRESS": "network",
    "PERSON": "person",
    # A street address points at a person; a place name alone ("the capital of France") does not.
    "ADDRESS": "address",
    "LOCATION": "location",
    "ORGANIZATION": "organization",
}

CUSTOM_PREFIX = "CUSTOM_"


def entity_class(entity_type: str) -> EntityClass:
    if entity_type.startswith(CUSTOM_PREFIX):
        return "custom"
    return ENTITY_CLASS_OF_TYPE[entity_type]


@dataclass(frozen=True, slots=True)
class Span:
    """One sensitive value in a text: ``text[start:end]`` is the value."""

    entity_type: str
    start: int
    end: int
    score: float = 1.0
