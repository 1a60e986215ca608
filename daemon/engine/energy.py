"""What a decode step costs in energy: measured by RAPL where the kernel exposes it, else estimated.

RAPL (Intel, and AMD since Zen through the same powercap interface) counts the CPU packages' energy in
microjoules at ``/sys/class/powercap/intel-rapl:N/energy_uj``; the counters wrap at
``max_energy_range_uj``. They cover the whole package, other processes included, so a measured step
can read high on a shared machine. Where they are missing or unreadable (containers, VMs, ARM boards,
non-root on newer kernels), a step is estimated: llama.cpp's threads are busy for the whole step, so
its wall time x threads x ``metrics.watts_per_core``, and labelled ``estimated`` wherever it shows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")


class EnergyMeter:
    def __init__(self, threads: int, watts_per_core: float, powercap: Path = POWERCAP):
        self.threads, self.watts_per_core = threads, watts_per_core
        self._packages = _rapl_packages(powercap)
        self.source = "rapl" if self._packages else "estimated"

    def start(self) -> tuple[float, list[int]]:
        """A reading to pass to ``joules_since`` at the end of the step."""
        return time.perf_counter(), [_read_uj(path) for path, _ in self._packages]

    def joules_since(self, reading: tuple[float, list[int]]) -> float:
        started, counters = reading
        wall = time.perf_counter() - started
        if not self._packages:
            return wall * self.threads * self.watts_per_core
        total = 0
        for (path, wrap), before in zip(self._packages, counters, strict=True):
            after = _read_uj(path)
            total += after - before if after >= before else after + wrap - before
        return total / 1e6


def _rapl_packages(powercap: Path) -> list[tuple[Path, int]]:
    """(energy_uj path, wrap-around range) of each CPU package whose counter this process can read."""
    found = []
    for zone in sorted(powercap.glob("intel-rapl:*")):
        if zone.name.count(":") != 1:
            continue  # a sub-zone (core, uncore, dram) of a package already counted
        try:
            _read_uj(zone / "energy_uj")
            wrap = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        found.append((zone / "energy_uj", wrap))
    if found:
        log.info("energy: measured by RAPL on %d CPU package(s)", len(found))
    return found


def _read_uj(path: Path) -> int:
    return int(path.read_text())
