"""The [[upstreams]] config entry: defaults, required fields, and what it refuses."""

from __future__ import annotations

import tomllib

import pytest
from pydantic import ValidationError

from localllm.config.upstreams import UpstreamSettings, check_unique_names

ISSUE_EXAMPLE = """
[[upstreams]]
name = "openai"
kind = "openai"
trust = "cloud"
model = "gpt-4o-mini"
price_input_per_mtok = 0.15
price_output_per_mtok = 0.60
timeout_s = 60
max_concurrency = 8

[[upstreams]]
name = "gpu-box"
kind = "openai-compatible"
base_url = "http://10.0.0.5:8000/v1/"
trust = "onprem"
model = "qwen2.5-32b"
"""


def test_the_issue_example_parses_with_defaults():
    openai, gpu = [UpstreamSettings.model_validate(entry) for entry in tomllib.loads(ISSUE_EXAMPLE)["upstreams"]]
    assert openai.url == "https://api.openai.com/v1"
    assert (openai.price_input_per_mtok, openai.price_output_per_mtok) == (0.15, 0.60)
    assert (openai.connect_timeout_s, openai.first_byte_timeout_s, openai.max_retries) == (3, 20, 2)
    assert gpu.url == "http://10.0.0.5:8000/v1"  # trailing slash dropped: paths are appended to it
    assert gpu.price_input_per_mtok == 0
    anthropic = UpstreamSettings(name="claude", kind="anthropic", trust="cloud", model="claude-sonnet-4-5")
    assert anthropic.url == "https://api.anthropic.com"


def test_every_field_has_a_description():
    assert all(info.description for info in UpstreamSettings.model_fields.values())


BASE = {"name": "up", "kind": "openai-compatible", "base_url": "http://h/v1", "trust": "onprem", "model": "m"}


@pytest.mark.parametrize(("change", "complaint"), [
    ({"base_url": None}, "base_url is required"),
    ({"base_url": "ftp://h/v1"}, "http:// or https://"),
    ({"base_url": "https://user:pw@h/v1"}, "user name or password"),
    ({"base_url": "https://h/v1?key=1"}, "query"),
    ({"name": "Has Spaces"}, "pattern"),
    ({"name": "-leading-dash"}, "pattern"),
    ({"name": "x" * 65}, "pattern"),
    ({"kind": "azure"}, "kind"),
    ({"trust": "maybe"}, "trust"),
    ({"model": ""}, "model"),
    ({"price_output_per_mtok": -1}, "price_output_per_mtok"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"max_concurrency": 0}, "max_concurrency"),
    ({"max_retries": -1}, "max_retries"),
    ({"api_key": "sk-in-the-config"}, "api_key"),  # keys belong in the keyring
])
def test_refuses_bad_values(change, complaint):
    with pytest.raises(ValidationError, match=complaint):
        UpstreamSettings.model_validate({**BASE, **change})


def test_names_must_be_unique():
    one = UpstreamSettings.model_validate(BASE)
    check_unique_names([one, UpstreamSettings.model_validate({**BASE, "name": "other"})])
    with pytest.raises(ValueError, match="'up' is used twice"):
        check_unique_names([one, one])
