"""What a decode step costs in energy: measured by RAPL where the kernel exposes it, else estimated.

RAPL (Intel, and AMD since Zen through the same powercap interface) counts the CPU packages' energy in
microjoules at ``/sys/class/powercap/intel-rapl:N/energy_uj``; the counters wrap at
``max_energy_range_uj``. They cover the whole package, other processes included, so a measured step
can read high on a shared machine. Where they are missing or unreadable (containers, VMs, ARM boards,
non-root on newer kernels), a step is estimated: llama.cpp's threads are busy for the whole step, so
its wall time x threads x ``metrics.watts_per_core``, and labelled ``estimated`` wherever it shows.

With layers offloaded to NVIDIA GPUs, the GPUs' own energy counters (NVML's total energy consumption,
Volta and later, through the official ``nvidia-ml-py`` bindings) are added, and the source says so
(``rapl+nvml``, ``estimated+nvml``). Like RAPL they count the whole device, other work included.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

POWERCAP = Path("/sys/class/powercap")


class EnergyMeter:
    """``gpu_millijoules``: the GPUs' summed energy counter (``nvml_energy_counter()``), where layers are
    offloaded to GPUs that report one; None otherwise."""

    def __init__(self, threads: int, watts_per_core: float, powercap: Path = POWERCAP,
                 gpu_millijoules: Callable[[], int] | None = None):
        self.threads, self.watts_per_core = threads, watts_per_core
        self._packages = _rapl_packages(powercap)
        self._gpu = gpu_millijoules
        self.source = ("rapl" if self._packages else "estimated") + ("+nvml" if gpu_millijoules else "")

    def start(self) -> tuple[float, list[int], int]:
        """A reading to pass to ``joules_since`` at the end of the step."""
        return (time.perf_counter(), [_read_uj(path) for path, _ in self._packages],
                self._gpu() if self._gpu else 0)

    def joules_since(self, reading: tuple[float, list[int], int]) -> float:
        started, counters, gpu_before = reading
        gpu = (self._gpu() - gpu_before) / 1e3 if self._gpu else 0.0
        wall = time.perf_counter() - started
        if not self._packages:
            return wall * self.threads * self.watts_per_core + gpu
        total = 0
        for (path, wrap), before in zip(self._packages, counters, strict=True):
            after = _read_uj(path)
            total += after - before if after >= before else after + wrap - before
        return total / 1e6 + gpu


def nvml_energy_counter() -> Callable[[], int] | None:
    """A function summing every NVIDIA GPU's energy counter (millijoules since the driver loaded), or None
    where there is no NVML (no ``nvidia-ml-py``, no driver) or no GPU that counts energy (before Volta)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        for handle in handles:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except pynvml.NVMLError as error:
        log.info("energy: no GPU energy counters (NVML: %s)", error)
        return None
    if not handles:
        return None
    log.info("energy: GPU energy from NVML on %d device(s)", len(handles))
    last = [0]

    def total_millijoules() -> int:
        # A GPU that stops answering (reset, fallen off the bus) must not stop decoding: its last reading
        # stands, so its energy stops counting until it answers again.
        try:
            last[0] = sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) for handle in handles)
        except pynvml.NVMLError as error:
            log.debug("energy: NVML read failed (%s)", error)
        return last[0]

    return total_millijoules


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
