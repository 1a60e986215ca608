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


async def test_percentiles_rates_energy_bins_and_the_cloud_comparison():
    configure()
    local = [RequestRecord(endpoint="chat", status=200, route="local", cache="miss", prompt_tokens=100 + 500 * (i % 3),
                           completion_tokens=40 + 100 * (i % 2), latency_ms=100.0 * (i + 1), ttft_ms=10.0 * (i + 1),
                           energy_joules=36.0, energy_source="estimated") for i in range(10)]
    await log_rows([*local,
                    RequestRecord(endpoint="chat", status=200, route="cache", cache="hit", prompt_tokens=100,
                                  completion_tokens=40, latency_ms=5.0, ttft_ms=2.0),
                    RequestRecord(endpoint="chat", status=200, route="cloud", upstream="oai", prompt_tokens=100,
                                  completion_tokens=40, latency_ms=900.0, ttft_ms=300.0, cost_usd=0.01)])
    traffic = json.loads(CliRunner().invoke(cli, ["stats", "--json"]).output)["traffic"]
    assert traffic["requests"] == 12
    assert traffic["routes"]["local"]["latency_ms"] == {"p50": 600.0, "p90": 1000.0, "p99": 1000.0}
    assert traffic["routes"]["local"]["ttft_ms"]["p50"] == 60.0
    assert traffic["cache_hit_rate"] == round(1 / 11, 4) and traffic["answered_on_device"] == round(11 / 12, 4)
    assert traffic["cost_usd_per_1k_requests"] == round(0.01 / 12 * 1000, 6)
    energy = traffic["energy"]
    assert (energy["requests"], energy["sources"]) == (10, ["estimated"])
    assert energy["wh_per_1k_requests"] == 10.0  # 36 J = 0.01 Wh each
    assert set(energy["by_prompt_tokens"]) == {"<256", "256-1k", ">=1k"}
    assert energy["by_answer_tokens"]["<64"]["requests"] == 5
    cloud = traffic["if_sent_to_cloud"]
    answer_tokens = sum(r.completion_tokens for r in local) + 40  # the cache hit was answered here too
    assert cloud["cloud_wh_estimated"] == round(answer_tokens * 0.6 / 1000, 4) and cloud["local_wh"] == 0.1
    text = CliRunner().invoke(cli, ["stats"]).output
    assert "92% on this device" in text and "Energy (estimated): 10.0 Wh per 1,000 requests" in text
    assert "The same answers from the cloud: $" in text and "Epoch AI" in text
