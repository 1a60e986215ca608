"""`localllm token`: the daemon's API token in the OS keyring (or a clear error without one)."""

from __future__ import annotations

import keyring
import keyring.backends.fail
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import load_settings
from localllm.daemon.http.tokens import resolve_api_token


def test_token_set_from_stdin_is_used_by_the_daemon(memory_keyring):
    result = CliRunner().invoke(cli, ["token", "set"], input="tok-from-stdin\n")
    assert result.exit_code == 0, result.output
    assert "tok-from-stdin" not in result.output
    assert resolve_api_token(load_settings().settings) == "tok-from-stdin"
    assert CliRunner().invoke(cli, ["token", "rm"]).exit_code == 0
    assert resolve_api_token(load_settings().settings) is None
    assert CliRunner().invoke(cli, ["token", "rm"]).exit_code == 1


def test_generated_token_is_printed_once_and_stored(memory_keyring):
    result = CliRunner().invoke(cli, ["token", "set", "--generate"])
    token = result.output.strip()
    assert len(token) >= 32
    assert memory_keyring.items[("localllm", "api-token")] == token


def test_config_token_wins_over_keyring(memory_keyring, monkeypatch):
    memory_keyring.set_password("localllm", "api-token", "from-keyring")
    monkeypatch.setenv("LOCALLLM_SERVER_API_TOKEN", "from-env")
    assert resolve_api_token(load_settings().settings) == "from-env"


def test_no_keyring_gives_a_one_line_fix():
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        result = CliRunner().invoke(cli, ["token", "set", "--generate"])
        assert resolve_api_token(load_settings().settings) is None
    finally:
        keyring.set_keyring(previous)
    assert result.exit_code == 1
    assert "LOCALLLM_SERVER_API_TOKEN" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_namespace_tokens_come_from_the_keyring_or_the_environment(memory_keyring, monkeypatch):
    import pytest

    from localllm.daemon.http.tokens import resolve_namespace_tokens
    from localllm.errors import ConfigError

    monkeypatch.setenv("LOCALLLM_SERVER_TOKEN_NAMESPACES", "team-a,team-b")
    assert CliRunner().invoke(cli, ["token", "set", "--namespace", "team-a"], input="tok-a\n").exit_code == 0
    with pytest.raises(ConfigError, match="token set --namespace team-b"):
        resolve_namespace_tokens(load_settings().settings)
    monkeypatch.setenv("LOCALLLM_TOKEN_TEAM_B", "tok-b")
    assert resolve_namespace_tokens(load_settings().settings) == {"team-a": "tok-a", "team-b": "tok-b"}
    assert resolve_api_token(load_settings().settings) is None  # the main token is separate
