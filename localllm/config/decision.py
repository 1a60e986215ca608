"""Settings for deciding where a request goes: guard, egress policy, router, cascade.

Part of the one typed configuration (``localllm.config.Settings``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from localllm.config.section import Section

EgressAction = Literal["allow", "redact", "block"]


class GuardSettings(Section):
    enabled: bool = Field(True, description="Scan every message of every request for sensitive data before "
                          "anything may leave the device. Off: nothing is redacted, so only onprem upstreams "
                          "are used.")
    ner: bool = Field(True, description="Find person names, locations and organisations with the statistical "
                      "NER model. Off (small boxes): rule-based types only, and names cannot be redacted.")
    custom_terms: dict[str, list[str]] = Field(
        default_factory=dict, description="Your own sensitive terms, by name ([guard.custom_terms] "
        "ACME_CUSTOMERS = [\"Contoso\"]): found as type CUSTOM_<NAME>, policy class custom.")
    custom_patterns: dict[str, str] = Field(
        default_factory=dict, description="Your own sensitive patterns as regular expressions, by name "
        "([guard.custom_patterns] PART_NUMBER = 'PN-\\d{6}'): type CUSTOM_<NAME>, class custom.")

    @field_validator("custom_terms", "custom_patterns")
    @classmethod
    def _names(cls, value: dict) -> dict:
        for name in value:
            if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,39}", name):
                raise ValueError(f"name {name!r} must be 1-40 upper-case letters, digits or '_' (e.g. PART_NUMBER)")
        return value


class TrustPolicy(Section):
    """What may reach an upstream of one trust level, per class of sensitive data."""

    secret: EgressAction = Field("block", description="API keys, tokens, private keys, passwords.")
    financial: EgressAction = Field("redact", description="Card numbers, IBANs, bank accounts.")
    government_id: EgressAction = Field("redact", description="SSNs, passports, driver licences, NHS numbers.")
    contact: EgressAction = Field("redact", description="Email addresses and phone numbers.")
    network: EgressAction = Field("redact", description="IP and MAC addresses.")
    person: EgressAction = Field("redact", description="Person names.")
    address: EgressAction = Field("redact", description="Street addresses.")
    location: EgressAction = Field("allow", description="Place names (cities, regions, countries): not personal "
                                   "on their own, and redacting them breaks questions like 'the capital of France'.")
    organization: EgressAction = Field("redact", description="Company and organisation names.")
    custom: EgressAction = Field("redact", description="Terms and patterns from [guard].")

    @field_validator("secret")
    @classmethod
    def _secrets_stay(cls, value: str) -> str:
        if value == "allow":
            raise ValueError("secrets never leave the device: use 'block' or 'redact'")
        return value


def _onprem_defaults() -> TrustPolicy:
    # An on-prem server is inside the organisation: contact details, names and
    # places may reach it; identifiers that enable fraud are still redacted.
    return TrustPolicy(contact="allow", network="allow", person="allow", address="allow", location="allow",
                       organization="allow", custom="allow")


class PolicySettings(Section):
    cloud: TrustPolicy = Field(default_factory=TrustPolicy,
                               description="What may reach cloud upstreams (default: nothing sensitive in the "
                               "clear; secrets block the request).")
    onprem: TrustPolicy = Field(default_factory=_onprem_defaults,
                                description="What may reach onprem upstreams (default: more than cloud).")

    @field_validator("onprem", mode="before")
    @classmethod
    def _onprem_from_its_defaults(cls, value):
        # A partial [policy.onprem] table changes only what it names; the rest keeps the onprem defaults.
        if isinstance(value, dict):
            return {**_onprem_defaults().model_dump(), **value}
        return value


class RouterSettings(Section):
    enabled: bool = Field(True, description="Score every request's complexity on the device.")
    escalate_to: str | None = Field(
        None, description="Upstream (from [[upstreams]]) that hard requests go to. Unset: everything is "
        "answered locally; the score is still shown by POST /v1/route.")
    escalate_share: float | None = Field(
        0.2, ge=0, le=1, description="Share of requests to escalate; turned into a score threshold from the "
        "router's score distribution, then from this daemon's own traffic.")
    threshold: float | None = Field(
        None, ge=0, le=1, description="Fixed score threshold (0..1); overrides escalate_share.")
    recalibrate: bool = Field(True, description="Recompute the escalate_share threshold from recent traffic.")


class CascadeSettings(Section):
    enabled: bool = Field(True, description="Answer locally first and escalate a weak answer (when the policy, "
                          "budget and escalate_to allow). Non-streaming requests only, unless streaming is on.")
    streaming: bool = Field(False, description="Also cascade streaming requests: nothing is sent until the local "
                            "answer is judged. Clients may opt in per request.")
    min_mean_logprob: float = Field(-2.0, le=0, description="A local answer whose mean token log-probability is "
                                    "below this is weak.")
    max_mean_entropy: float = Field(4.0, gt=0, description="A local answer whose mean next-token entropy (nats) "
                                    "is above this is weak.")
    truncated_is_weak: bool = Field(False, description="An answer cut off by max_tokens is weak (off: a client "
                                    "that sets a small max_tokens asks for a short answer).")
    refusal_is_weak: bool = Field(True, description="An answer that refuses or says it cannot answer is weak.")
