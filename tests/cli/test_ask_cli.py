"""`localllm ask` in-process (no daemon), `config show`, `status`, and user-error handling."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import DEFAULT_MODEL


@pytest.fixture
def run(models_dir, monkeypatch):
    # Point at a port nothing listens on, so `ask` takes the in-process path.
    monkeypatch.setenv("LOCALLLM_SERVER_PORT", "9")
    monkeypatch.setenv("LOCALLLM_ENGINE_N_CTX", "1024")
    monkeypatch.setenv("LOCALLLM_ENGINE_N_THREADS", "2")

    def invoke(*args, input=None):
        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)

    return invoke


def test_ask_in_process_streams_an_answer(run):
    result = run("ask", "-t", "0", "--max-tokens", "6", "Name a fruit.")
    assert result.exit_code == 0, result.output
    assert result.output.strip()
    assert result.output.endswith("\n")


def test_ask_json_is_an_openai_chat_completion(run):
    result = run("ask", "--json", "-t", "0", "--max-tokens", "5", "--system", "Be brief.", "Hello")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == DEFAULT_MODEL
    used = answer["usage"]["completion_tokens"]
    assert 1 <= used <= 5
    assert answer["choices"][0]["finish_reason"] == ("length" if used == 5 else "stop")
    assert answer["choices"][0]["message"]["content"]


def test_ask_reads_the_prompt_from_stdin(run):
    greedy = run("ask", "--json", "-t", "0", "--max-tokens", "5", "Why is the sea blue?")
    piped = run("ask", "--json", "-t", "0", "--max-tokens", "5", input="Why is the sea blue?\n")
    assert json.loads(piped.output)["choices"][0]["message"]["content"] == \
        json.loads(greedy.output)["choices"][0]["message"]["content"]


def test_unknown_model_is_a_one_line_error(run):
    result = CliRunner().invoke(cli, ["ask", "--model", "no-such-model", "hi"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "localllm pull" in lines[0]


def test_too_long_prompt_is_a_one_line_error(run):
    result = CliRunner().invoke(cli, ["ask", "word " * 3000])
    assert result.exit_code == 1
    assert "context of 1024 tokens" in result.output
    assert "Traceback" not in result.output


def test_bad_config_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv("LOCALLLM_ENGINE_N_CTX", "lots")
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.exit_code == 1
    assert "engine.n_ctx" in result.output and "LOCALLLM_ENGINE_N_CTX" in result.output


def test_config_show_names_sources_and_hides_the_token(monkeypatch):
    monkeypatch.setenv("LOCALLLM_SERVER_API_TOKEN", "sentinel-token-value")
    monkeypatch.setenv("LOCALLLM_SERVER_PORT", "9100")
    result = CliRunner().invoke(cli, ["config", "show", "--json"])
    assert result.exit_code == 0
    assert "sentinel-token-value" not in result.output
    rows = {row["key"]: row for row in json.loads(result.output)}
    assert rows["server.port"]["value"] == "9100" and rows["server.port"]["source"] == "env LOCALLLM_SERVER_PORT"
    assert rows["server.api_token"]["value"] == "(set, hidden)"
    assert rows["engine.n_ctx"]["source"] == "default"


def test_status_without_daemon_says_so_and_fails(monkeypatch):
    monkeypatch.setenv("LOCALLLM_SERVER_PORT", "9")
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1
    assert "not running" in result.output


async def test_ask_in_process_runs_the_same_routing_as_the_daemon(run, memory_keyring):
    """Guard, router and policy apply in-process too: a hard question escalates, redacted."""
    import asyncio

    from localllm import paths
    from localllm.store.database import open_database
    from tests.fallback.fake_upstream import FakeUpstream

    cloud = await FakeUpstream(answer_from=lambda body: "cloud saw: " + body["messages"][-1]["content"]).start()
    try:
        memory_keyring.set_password("localllm-upstream", "cloudy", "sk-test-in-process")
        config = paths.config_file()
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f'[[upstreams]]\nname = "cloudy"\nkind = "openai"\nbase_url = "{cloud.openai_base_url}"\n'
                          'trust = "cloud"\nmodel = "gpt-test"\n[router]\nescalate_to = "cloudy"\nthreshold = 0.0\n')
        result = await asyncio.to_thread(run, "ask", "--json", "--max-tokens", "20",
                                         "Email dana.scully@fbi.example about the case.")
    finally:
        await cloud.stop()
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)["choices"][0]["message"]["content"]
    assert answer == "cloud saw: Email dana.scully@fbi.example about the case."  # restored for the user
    sent = cloud.received[-1].body["messages"][-1]["content"]
    assert "dana.scully@fbi.example" not in sent and "[EMAIL_ADDRESS_1]" in sent
    audit = list(open_database().query("SELECT upstream, action, reason FROM egress_audit"))
    assert audit == [{"upstream": "cloudy", "action": "redact", "reason": "router"}]
