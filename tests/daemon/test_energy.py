"""Energy per request: RAPL's counters where readable (a fake powercap tree here, with a wrap-around),
else the estimate from wall time x threads x watts per core; split among a step's sequences by their
tokens; stored per request (logs), and counted in /metrics."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import DEFAULT_MODEL
from localllm.daemon.engine.energy import EnergyMeter, nvml_energy_counter
from localllm.store.database import open_database
from tests.conftest import make_settings
from tests.daemon.test_metrics import scrape, value


def powercap(tmp_path, packages: dict[str, int], wrap: int = 1_000_000):
    for name, energy in packages.items():
        zone = tmp_path / name
        zone.mkdir(exist_ok=True)
        (zone / "energy_uj").write_text(f"{energy}\n")
        (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return tmp_path


def test_rapl_counts_every_package_and_survives_a_wrap(tmp_path):
    root = powercap(tmp_path, {"intel-rapl:0": 999_000, "intel-rapl:1": 10, "intel-rapl:0:0": 5})
    meter = EnergyMeter(threads=2, watts_per_core=10, powercap=root)
    assert meter.source == "rapl"
    reading = meter.start()
    powercap(tmp_path, {"intel-rapl:0": 1_000, "intel-rapl:1": 500_010, "intel-rapl:0:0": 900})  # 0 wrapped
    assert meter.joules_since(reading) == pytest.approx((2_000 + 500_000) / 1e6)  # the sub-zone is not added


def test_without_rapl_a_step_is_estimated_from_its_time(tmp_path):
    meter = EnergyMeter(threads=4, watts_per_core=2.5, powercap=tmp_path / "missing")
    assert meter.source == "estimated"
    reading = meter.start()
    joules = meter.joules_since(reading)
    assert 0 <= joules < 1  # microseconds at 10 W


def test_gpu_counters_are_added_to_the_cpus_and_named_in_the_source(tmp_path):
    """NVML's counter is millijoules; a stand-in function plays it here (this machine has no NVIDIA GPU)."""
    gpu_mj = iter([1_000_000, 1_002_500])
    root = powercap(tmp_path, {"intel-rapl:0": 100})
    meter = EnergyMeter(threads=2, watts_per_core=10, powercap=root, gpu_millijoules=lambda: next(gpu_mj))
    assert meter.source == "rapl+nvml"
    reading = meter.start()
    powercap(tmp_path, {"intel-rapl:0": 1_100})
    assert meter.joules_since(reading) == pytest.approx(1_000 / 1e6 + 2.5)
    estimated = EnergyMeter(threads=2, watts_per_core=10, powercap=tmp_path / "missing", gpu_millijoules=lambda: 7)
    assert estimated.source == "estimated+nvml"


def test_without_an_nvidia_driver_there_is_no_gpu_counter():
    import ctypes.util

    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("an NVIDIA driver is installed: nothing to check about its absence")
    assert nvml_energy_counter() is None


async def test_each_local_answer_carries_its_energy_to_the_log_and_metrics(make_client, localllm_home):
    client = await make_client(make_settings())
    bodies = [{"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": f"Count to {n}."}],
               "max_tokens": tokens, "temperature": 0} for n, tokens in ((3, 4), (9, 24))]
    for body in bodies:
        assert (await client.post("/v1/chat/completions", json=body)).status == 200
    rows = list(open_database().query("SELECT completion_tokens, energy_joules, energy_source FROM requests "
                                      "ORDER BY id"))
    assert all(r["energy_source"] == "estimated" and r["energy_joules"] > 0 for r in rows)  # no RAPL here
    short, long = rows
    assert long["completion_tokens"] > short["completion_tokens"] and long["energy_joules"] > short["energy_joules"]
    samples = await scrape(client)
    assert value(samples, "localllm_energy_joules_total", route="local", model=DEFAULT_MODEL,
                 source="estimated") == pytest.approx(sum(r["energy_joules"] for r in rows))
    logged = CliRunner().invoke(cli, ["logs", "--json"])
    assert logged.exit_code == 0 and json.loads(logged.output.splitlines()[0])["energy_source"] == "estimated"
    assert "energy_joules" in CliRunner().invoke(cli, ["logs"]).output
