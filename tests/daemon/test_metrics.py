"""GET /metrics: the series and their values after real requests (parsed with prometheus-client's own
parser), the API's access rules, and a real Prometheus server (Debian's `prometheus`) scraping the daemon
and answering PromQL over what it scraped."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localllm.config import DEFAULT_MODEL, UpstreamSettings
from localllm.store.database import open_database
from tests.conftest import make_settings


def with_priced_cloud(settings):
    """A cloud upstream that only prices the local answers: nothing escalates to it, so it is never called."""
    cloud = UpstreamSettings.model_validate({"name": "pricey", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                             "trust": "cloud", "model": "big", "price_input_per_mtok": 2.5,
                                             "price_output_per_mtok": 10.0})
    return settings.model_copy(update={"upstreams": [cloud]})


def ask(n: int) -> dict:
    return {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": f"Say hi to number {n}."}],
            "max_tokens": 4, "temperature": 0}


async def scrape(client, headers: dict | None = None) -> dict[tuple, float]:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_tokens_latency_cache_and_state_are_counted(make_client):
    client = await make_client(make_settings(cache={"enabled": True}))
    for n in range(3):
        assert (await client.post("/v1/chat/completions", json=ask(n))).status == 200
    assert (await client.post("/v1/chat/completions", json=ask(0))).status == 200  # a cache hit
    assert (await client.post("/v1/chat/completions", json={"model": DEFAULT_MODEL})).status == 400
    samples = await scrape(client)

    assert value(samples, "localllm_requests_total", route="local", model=DEFAULT_MODEL, status="200") == 3
    assert value(samples, "localllm_requests_total", route="cache", model=DEFAULT_MODEL, status="200") == 1
    assert value(samples, "localllm_requests_total", route="none", model="none", status="400") == 1
    rows = list(open_database().query("SELECT completion_tokens FROM requests WHERE status = 200"))
    assert len(rows) == 4  # a cache hit reports its answer's tokens too, as the request log does
    assert value(samples, "localllm_tokens_generated_total", model=DEFAULT_MODEL) == sum(
        r["completion_tokens"] for r in rows)
    assert value(samples, "localllm_prompt_tokens_total", model=DEFAULT_MODEL) > 0
    assert value(samples, "localllm_time_to_first_token_seconds_count", route="local", model=DEFAULT_MODEL) == 3
    assert value(samples, "localllm_request_duration_seconds_count", route="cache", model=DEFAULT_MODEL) == 1
    # "number 1" and "number 2" are close to the cached "number 0": the verifier turns them away
    assert value(samples, "localllm_cache_lookups_total", outcome="miss") == 1
    assert value(samples, "localllm_cache_lookups_total", outcome="rejected") == 2
    assert value(samples, "localllm_cache_lookups_total", outcome="hit") == 1
    assert value(samples, "localllm_queue_depth", model=DEFAULT_MODEL) == 0
    assert value(samples, "localllm_model_memory_bytes", model=DEFAULT_MODEL) > 100 * 2**20


async def test_what_the_local_answers_would_have_cost_in_the_cloud(make_client):
    client = await make_client(with_priced_cloud(make_settings(cache={"enabled": True})))
    for n in (0, 1, 0):  # the last from the cache: saved as well
        assert (await client.post("/v1/chat/completions", json=ask(n))).status == 200
    samples = await scrape(client)
    rows = list(open_database().query("SELECT prompt_tokens, completion_tokens FROM requests"))
    expected_usd = sum(r["prompt_tokens"] * 2.5 + r["completion_tokens"] * 10.0 for r in rows) / 1e6
    assert value(samples, "localllm_cloud_equivalent_usd_total", priced_as="pricey") == pytest.approx(expected_usd)
    expected_joules = sum(r["completion_tokens"] for r in rows) * 0.6 / 1000 * 3600  # the default Wh per 1k
    assert value(samples, "localllm_cloud_equivalent_energy_joules_total") == pytest.approx(expected_joules)
    unpriced = await scrape(await make_client(make_settings()))  # no cloud upstream: nothing to price against
    assert not any(name.startswith("localllm_cloud_equivalent_usd") for name, _ in unpriced)


async def test_metrics_follow_the_apis_rules_and_can_be_off(make_client):
    client = await make_client(make_settings(), api_token="metrics-token-1234")
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-1234"})).status == 200
    assert (await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-1234",
                                                  "Origin": "https://evil.example"})).status == 403
    off = make_settings()
    off = off.model_copy(update={"metrics": off.metrics.model_copy(update={"enabled": False})})
    client = await make_client(off)
    response = await client.get("/metrics")
    assert response.status == 404 and (await response.json())["error"]["code"] == "metrics_disabled"


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="Debian's prometheus is not installed (apt-get install prometheus; .ci/run does)")
async def test_a_real_prometheus_scrapes_the_daemon_and_answers_promql(make_client, tmp_path):
    client = await make_client(make_settings())
    for n in range(5):
        assert (await client.post("/v1/chat/completions", json=ask(n))).status == 200
    ttfts = sorted(r["ttft_ms"] / 1000 for r in open_database().query("SELECT ttft_ms FROM requests"))
    target = f"{client.server.host}:{client.server.port}"
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: localllm\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                               f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as prometheus:
            async def query(promql: str) -> list:
                async with prometheus.get("/api/v1/query", params={"query": promql}) as response:
                    return (await response.json())["data"]["result"] if response.status == 200 else []

            deadline = time.monotonic() + 60
            by_route: list = []
            while time.monotonic() < deadline:
                try:
                    by_route = await query("sum by (route) (localllm_requests_total)")
                except aiohttp.ClientError:
                    by_route = []  # not listening yet
                if by_route:
                    break
                await asyncio.sleep(0.5)
            assert {r["metric"]["route"]: float(r["value"][1]) for r in by_route} == {"local": 5.0}
            p90 = float((await query("histogram_quantile(0.9, sum by (le) "
                                     "(localllm_time_to_first_token_seconds_bucket))"))[0]["value"][1])
            # PromQL's estimate from our buckets, worked out by hand from the TTFTs the request log holds:
            # rank 0.9 x count, the first bucket whose cumulative count reaches it, linear inside it.
            bounds = (0.0, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
            rank = 0.9 * len(ttfts)
            upper = next(i for i in range(1, len(bounds)) if sum(t <= bounds[i] for t in ttfts) >= rank)
            below = sum(t <= bounds[upper - 1] for t in ttfts)
            inside = sum(t <= bounds[upper] for t in ttfts) - below
            expected = bounds[upper - 1] + (bounds[upper] - bounds[upper - 1]) * (rank - below) / inside
            assert p90 == pytest.approx(expected), (p90, ttfts)
    finally:
        server.terminate()
        server.wait(30)


async def test_the_grafana_dashboard_asks_only_for_series_the_daemon_serves(make_client):
    """packaging/grafana/localllm-dashboard.json: every metric its queries name is one /metrics serves."""
    import json
    import re
    from pathlib import Path

    client = await make_client(make_settings())
    assert (await client.post("/v1/chat/completions", json=ask(0))).status == 200
    text = await (await client.get("/metrics")).text()
    served = {family.name for family in text_string_to_metric_families(text)}  # counters: without "_total"
    dashboard = json.loads((Path(__file__).parents[2] / "packaging/grafana/localllm-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 12
    for query in queries:
        for name in re.findall(r"\blocalllm_[a-z_]+", query):
            base = re.sub(r"_(total|bucket|count|sum)$", "", name)
            assert base in served, (name, query)
