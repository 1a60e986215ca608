"""The egress policy matrix: every trust level x class x action, and the defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from localllm.config.decision import PolicySettings, TrustPolicy
from localllm.decision.egress_policy import EgressPolicy
from localllm.decision.guard.entities import ENTITY_CLASS_OF_TYPE, ENTITY_CLASSES
from localllm.decision.guard.scan import Finding

TYPE_OF_CLASS = {cls: next((t for t, c in ENTITY_CLASS_OF_TYPE.items() if c == cls), "CUSTOM_PROJECT")
                 for cls in ENTITY_CLASSES}


def finding(entity_class: str, index: int = 0) -> Finding:
    return Finding(index, TYPE_OF_CLASS[entity_class], entity_class, 0, 4, 1.0)


@pytest.mark.parametrize("trust", ["onprem", "cloud"])
@pytest.mark.parametrize("entity_class", ENTITY_CLASSES)
@pytest.mark.parametrize("action", ["allow", "redact", "block"])
def test_policy_matrix(trust, entity_class, action):
    if entity_class == "secret" and action == "allow":
        with pytest.raises(ValidationError, match="secrets never leave the device"):
            TrustPolicy(secret="allow")
        return
    table = TrustPolicy(**{entity_class: action})
    policy = EgressPolicy(PolicySettings(**{trust: table}))
    one = finding(entity_class)
    verdict = policy.verdict([one], trust)
    assert verdict.action == action
    assert verdict.to_redact == ((one,) if action == "redact" else ())
    assert verdict.blocked_classes == ((entity_class,) if action == "block" else ())
    assert (verdict.reason is not None) == (action == "block")


def test_defaults_send_nothing_sensitive_to_cloud_in_the_clear_and_keep_secrets():
    policy = EgressPolicy(PolicySettings())
    for entity_class in ENTITY_CLASSES:
        cloud = policy.verdict([finding(entity_class)], "cloud").action
        expected = {"secret": "block", "location": "allow"}.get(entity_class, "redact")
        assert cloud == expected, entity_class
    assert policy.verdict([finding("secret")], "onprem").action == "block"
    onprem = {c: policy.verdict([finding(c)], "onprem").action for c in ENTITY_CLASSES}
    assert onprem["person"] == onprem["contact"] == "allow"  # onprem may receive more
    assert onprem["financial"] == onprem["government_id"] == "redact"
    # What may not reach the cloud in the clear is "sensitive" on the device too (not cached).
    places = [finding("location"), finding("person", 1)]
    assert policy.sensitive(places) == [places[1]]


def test_the_strictest_action_wins_and_only_redact_findings_are_redacted():
    policy = EgressPolicy(PolicySettings(cloud=TrustPolicy(person="allow", contact="redact")))
    person, email = finding("person"), finding("contact", 1)
    verdict = policy.verdict([person, email], "cloud")
    assert verdict.action == "redact" and verdict.to_redact == (email,)
    blocked = policy.verdict([person, email, finding("secret", 2)], "cloud")
    assert blocked.action == "block" and blocked.blocked_classes == ("secret",)
    assert policy.verdict([], "cloud").action == "allow"


def test_an_unknown_trust_level_gets_the_cloud_table():
    policy = EgressPolicy(PolicySettings())
    assert policy.verdict([finding("person")], "somewhere").action == "redact"
