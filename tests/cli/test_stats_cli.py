"""`localllm stats`: spend per upstream per day and the savings of local answers, from a real log."""

from __future__ import annotations

import json

from click.testing import CliRunner

from localllm import paths
from localllm.cli.main import cli
from localllm.store.request_log import RequestLog, RequestRecord
from tests.conftest import record_rows


async def log_rows(records):
    await record_rows(RequestLog, records)


def configure() -> None:
    path = paths.config_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('[[upstreams]]\nname = "oai"\nkind = "openai"\ntrust = "cloud"\nmodel = "m"\n'
                    'price_input_per_mtok = 2.0\nprice_output_per_mtok = 8.0\n')


async def test_spend_and_savings():
    configure()
    await log_rows([
        RequestRecord(endpoint="chat", status=200, route="cloud", upstream="oai", prompt_tokens=100,
                      completion_tokens=50, cost_usd=0.0006),
        RequestRecord(endpoint="chat", status=200, route="local", prompt_tokens=1000, completion_tokens=500),
        RequestRecord(endpoint="chat", status=200, route="cache", cache="hit", prompt_tokens=1000,
                      completion_tokens=500),
        RequestRecord(endpoint="chat", status=400, route="local", prompt_tokens=9999, completion_tokens=9999),
    ])
    result = CliRunner().invoke(cli, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["priced_as"] == "oai"
    [spend] = stats["upstream_spend"]
    assert (spend["upstream"], spend["requests"], spend["cost_usd"]) == ("oai", 1, 0.0006)
    [local] = stats["local_answers"]
    assert (local["requests"], local["from_cache"]) == (2, 1)  # the failed request is not an answer
    assert local["saved_usd"] == (2000 * 2.0 + 1000 * 8.0) / 1e6
    text = CliRunner().invoke(cli, ["stats"]).output
    assert "would have cost $0.0120 at oai" in text


def test_stats_without_a_log_or_with_a_wrong_reference():
    assert "No requests logged yet" in CliRunner().invoke(cli, ["stats"]).output
    configure()
    wrong = CliRunner().invoke(cli, ["stats", "--price-as", "nope"])
    assert wrong.exit_code == 1 and "No upstream named 'nope'" in wrong.output
