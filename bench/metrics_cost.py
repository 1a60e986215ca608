"""What metrics cost (issue 21): a /metrics scrape, and the request path's share.

In one run: the daemon's metrics object after 10,000 requests spread over 2 models, 5 routes and 3
statuses (plus upstream spend and guard findings), then
  scrape    render() of the whole text format, median of 200 (target < 5 ms)
  observe   recording one finished request (counters and histograms), median of 10,000
  energy    the energy meter's work in one decode step (a reading before, joules after), median of
            10,000: estimated (no RAPL here) and reading two package counters from files laid out as
            /sys/class/powercap is (a stand-in where RAPL is unreadable; sysfs reads cost about the same)
  request   a local 16-token greedy answer of the default model in the same process, median of 5,
            for the ratio (observe + 17 steps x energy) / request (target <= 1%)

    python bench/metrics_cost.py
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from localllm.config import DEFAULT_MODEL, Settings
from localllm.daemon.engine.energy import EnergyMeter
from localllm.daemon.engine.llama_engine import GenerationJob
from localllm.daemon.engine.model_registry import registry_for
from localllm.daemon.http.server import resolve_model_file
from localllm.daemon.pipeline.metrics import CloudReference, DaemonMetrics
from localllm.decision.guard.scan import Finding
from localllm.store.request_log import RequestRecord
from localllm.vocabulary import AnswerText, Sampling

ROUTES = ("local", "cache", "cloud", "onprem", "local")


def records(n: int) -> list[RequestRecord]:
    made = []
    for i in range(n):
        record = RequestRecord(endpoint="chat", status=(200, 200, 200, 400, 503)[i % 5], model=f"model-{i % 2}",
                               route=ROUTES[i % 5], cache=("hit", "miss", "bypass")[i % 3], prompt_tokens=40 + i % 50,
                               completion_tokens=20 + i % 100, ttft_ms=50 + i % 900, latency_ms=500 + i % 9000)
        if record.route == "cloud":
            record.upstream, record.cost_usd = "openai", 0.0004
        made.append(record)
    return made


async def local_answer_s(settings: Settings) -> float:
    registry = registry_for(settings, [DEFAULT_MODEL], [resolve_model_file(settings, DEFAULT_MODEL)])
    registry.start_all()
    scheduler = registry.default
    await scheduler.wait_ready()
    times = []
    for i in range(5):
        tokens = await scheduler.render_and_tokenize([{"role": "user", "content": f"Question {i}: say hi."}])
        started = time.perf_counter()
        await AnswerText.read(scheduler.stream(GenerationJob(tokens, 16, Sampling(temperature=0))))
        times.append(time.perf_counter() - started)
    await registry.stop_all()
    return statistics.median(times)


def energy_step_s(powercap: Path) -> float:
    meter = EnergyMeter(threads=2, watts_per_core=10.0, powercap=powercap)
    times = []
    for _ in range(10_000):
        started = time.perf_counter()
        meter.joules_since(meter.start())
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def powercap_lookalike(root: Path) -> Path:
    for package in range(2):
        zone = root / f"intel-rapl:{package}"
        zone.mkdir(parents=True)
        (zone / "energy_uj").write_text("123456789\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
    return root


def main() -> None:
    settings = Settings.model_validate({"engine": {"n_parallel": 1}})
    metrics = DaemonMetrics(cloud=CloudReference(0.6, "openai", 2.5, 10.0))
    batch = records(10_000)
    observe = []
    for record in batch:
        started = time.perf_counter()
        metrics.observe(record)
        observe.append(time.perf_counter() - started)
    metrics.observe_findings([Finding(0, kind, "person", 0, 1, 1.0) for kind in ("PERSON", "EMAIL_ADDRESS")] * 50)
    scrape = []
    for _ in range(200):
        started = time.perf_counter()
        body = metrics.render()
        scrape.append(time.perf_counter() - started)
    estimated_s = energy_step_s(Path("/nonexistent-powercap"))
    with tempfile.TemporaryDirectory() as scratch:
        rapl_s = energy_step_s(powercap_lookalike(Path(scratch)))
    request_s = asyncio.run(local_answer_s(settings))
    observe_s = statistics.median(observe)
    per_request = observe_s + 17 * max(estimated_s, rapl_s)  # a prompt step and 16 answer steps
    print(json.dumps({"scrape_ms_p50": round(statistics.median(scrape) * 1000, 3),
                      "scrape_ms_max": round(max(scrape) * 1000, 3), "scrape_bytes": len(body),
                      "observe_us_p50": round(observe_s * 1e6, 2), "local_request_ms_p50": round(request_s * 1000, 1),
                      "observe_share_of_request": f"{observe_s / request_s:.5%}",
                      "energy_step_us_p50_estimated": round(estimated_s * 1e6, 2),
                      "energy_step_us_p50_rapl_files": round(rapl_s * 1e6, 2),
                      "metrics_and_energy_share_of_request": f"{per_request / request_s:.5%}"}, indent=2))


if __name__ == "__main__":
    main()
