"""`localllm models list|pull|rm|info` and `localllm pull`, through click's test runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import DEFAULT_MODEL
from localllm.daemon.models.catalog import CATALOG
from tests.conftest import link_into
from tests.daemon.synthetic_gguf import write_tiny_gguf

DEFAULT_FILENAME = CATALOG[DEFAULT_MODEL].filename


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def tiny_file(tmp_path):
    (tmp_path / "downloads").mkdir()
    return write_tiny_gguf(tmp_path / "downloads" / "tiny.gguf")


def test_list_when_empty_says_how_to_pull(localllm_home):
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    assert "No models in" in result.output
    assert f"localllm pull {DEFAULT_MODEL}" in result.output
    assert json.loads(run("models", "list", "--json").stdout) == []


def test_list_shows_the_default_model(models_dir):
    result = run("models", "list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith(DEFAULT_FILENAME))
    assert "98.4 MB" in row and f"{DEFAULT_MODEL} (default)" in row

    [listed] = json.loads(run("models", "list", "--json").stdout)
    assert listed["name"] == DEFAULT_FILENAME
    assert listed["catalog_name"] == DEFAULT_MODEL
    assert listed["default"] is True
    assert listed["size_bytes"] == CATALOG[DEFAULT_MODEL].size_bytes


def test_pull_a_local_file_then_find_it(localllm_home, tiny_file):
    result = run("pull", str(tiny_file))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Pulled tiny.gguf")
    assert "100%" in result.stderr  # progress goes to stderr, a line at a time when not a terminal

    again = run("models", "pull", str(tiny_file), "--json")
    assert again.exit_code == 0, again.output
    pulled = json.loads(again.stdout)
    assert pulled["already_present"] is True
    assert pulled["path"] == str(localllm_home.resolve() / "data" / "models" / "tiny.gguf")

    assert [m["name"] for m in json.loads(run("models", "list", "--json").stdout)] == ["tiny.gguf"]


def test_pull_with_a_name(localllm_home, tiny_file):
    result = run("pull", str(tiny_file), "--name", "renamed")
    assert result.exit_code == 0, result.output
    assert (localllm_home / "data" / "models" / "renamed.gguf").is_file()


@pytest.mark.parametrize("name", ["../escaped", "/tmp/escaped.gguf", "sub\\escaped.gguf", "esc\uff0faped"])
def test_pull_refuses_names_outside_the_models_dir(localllm_home, tiny_file, tmp_path, name):
    result = run("pull", str(tiny_file), "--name", name)
    assert result.exit_code == 1
    assert "Unsafe model file name" in result.output
    assert len(result.output.strip().splitlines()) == 1  # one line, no traceback
    assert not list(tmp_path.rglob("escaped*")) and not list(tmp_path.rglob("*aped.gguf"))


def test_pull_of_something_unknown_fails_in_one_line(localllm_home):
    result = run("pull", "not-a-model")
    assert result.exit_code == 1
    assert result.output.startswith("Error: Don't know how to pull 'not-a-model'")
    assert len(result.output.strip().splitlines()) == 1


def test_info_on_the_real_model(models_dir):
    result = run("models", "info", DEFAULT_MODEL)
    assert result.exit_code == 0, result.output
    assert "llama" in result.output and "Q4_1" in result.output and "8192 tokens" in result.output
    assert "134.5M" in result.output

    data = json.loads(run("models", "info", DEFAULT_FILENAME, "--json", "--sha256").stdout)
    assert data["architecture"] == "llama"
    assert data["quantization"] == "Q4_1"
    assert data["context_length"] == 8192
    assert data["has_chat_template"] is True
    assert data["catalog_name"] == DEFAULT_MODEL
    assert data["sha256"] == CATALOG[DEFAULT_MODEL].sha256


def test_info_on_gemma_names_its_licence_terms_and_chat_format(models_dir, gemma_model_file):
    link_into(models_dir, gemma_model_file)
    result = run("models", "info", "gemma3-270m")
    assert result.exit_code == 0, result.output
    assert "gemma3" in result.output and "Q4_K_M" in result.output and "32768 tokens" in result.output
    assert "Gemma Terms of Use" in result.output and "ai.google.dev/gemma/terms" in result.output
    assert "family's turn format" in result.output
    data = json.loads(run("models", "info", "gemma3-270m", "--json").stdout)
    assert data["shape"]["n_vocab"] == 262144 and data["shape"]["sliding_window"] == 512
    assert data["license"] == "Gemma Terms of Use" and "chat_template" not in data


def test_info_of_a_missing_model(localllm_home):
    result = run("models", "info", "absent")
    assert result.exit_code == 1
    assert "localllm pull absent" in result.output


def test_rm_asks_first(localllm_home, tiny_file):
    run("pull", str(tiny_file))
    stored = localllm_home / "data" / "models" / "tiny.gguf"

    declined = run("models", "rm", "tiny", input="n\n")
    assert declined.exit_code == 1  # aborted
    assert stored.exists()

    confirmed = run("models", "rm", "tiny", input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert not stored.exists()


def test_rm_yes_and_rm_missing(localllm_home, tiny_file):
    run("pull", str(tiny_file))
    result = run("models", "rm", "tiny.gguf", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted" in result.output
    assert json.loads(run("models", "list", "--json").stdout) == []

    missing = run("models", "rm", "tiny", "--yes")
    assert missing.exit_code == 1
    assert "localllm pull tiny" in missing.output


def test_rm_refuses_paths(localllm_home, tmp_path):
    outside = tmp_path / "precious.gguf"
    outside.write_bytes(b"GGUF")
    result = run("models", "rm", "../../precious.gguf", "--yes")
    assert result.exit_code == 1
    assert outside.exists()
