"""How much CPU processes other than the benchmark's own used while it measured.

This machine is shared: a test suite or a build next door takes a core, and
llama.cpp's polling thread pools then slow down far more than their share (a
thread that spins waiting for a descheduled peer). A round with other
processes busy says so in the report, instead of passing for a slow engine.

Reads /proc (Linux); elsewhere it reports nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_ticks() -> int | None:
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def _process_ticks(pid: int) -> int:
    try:
        # the command name (field 2) may hold spaces; what follows its closing parenthesis does not
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


class ForeignCpu:
    """Cores used on average, between start and stop, by processes other than this one, ``pids``
    and this one's children that have finished (llama-bench)."""

    def __init__(self, pids: list[int]):
        self.pids = [os.getpid(), *pids]
        self._start: tuple[float, float, float] | None = None

    def _ours_s(self) -> float:
        finished = os.times()
        return (sum(_process_ticks(pid) for pid in self.pids) / _TICKS
                + finished.children_user + finished.children_system)

    def start(self) -> None:
        busy = _busy_ticks()
        self._start = None if busy is None else (time.monotonic(), busy / _TICKS, self._ours_s())

    def stop(self) -> float | None:
        busy = _busy_ticks()
        if self._start is None or busy is None:
            return None
        started, busy0, ours0 = self._start
        elapsed = time.monotonic() - started
        foreign = (busy / _TICKS - busy0) - (self._ours_s() - ours0)
        return max(0.0, foreign / elapsed) if elapsed > 0 else None
