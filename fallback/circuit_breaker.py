"""A circuit breaker per upstream, so that a dead upstream costs one probe, not every request.

closed: requests pass; ``failure_threshold`` consecutive failures open it.
open: requests fail at once with ``CircuitOpen`` until ``cooldown_s`` has passed.
half_open: exactly one request (the probe) goes through; its success closes the
breaker, its failure re-opens it for another cool-down. A probe whose caller
went away before an outcome hands the probe to the next request.

Single-threaded by design: it lives on the daemon's event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from localllm.fallback.errors import CircuitOpen

log = logging.getLogger(__name__)

BreakerStateName = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerState:
    """What `localllm status` shows for one upstream."""

    name: str
    state: BreakerStateName
    consecutive_failures: int
    seconds_until_half_open: float | None  # only while open


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if failure_threshold < 1 or cooldown_s < 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_s >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerStateName = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        name = self._current()
        remaining = None
        if name == "open":
            remaining = max(0.0, self._opened_at + self.cooldown_s - self._clock())
        return BreakerState(self.name, name, self._failures, remaining)

    def admit(self) -> bool:
        """Let one request through or raise CircuitOpen. True when that request is the half-open probe."""
        state = self._current()
        if state == "closed":
            return False
        if state == "half_open" and not self._probe_in_flight:
            self._probe_in_flight = True
            log.info("upstream %s: circuit half-open, sending one probe request", self.name)
            return True
        remaining = max(0.0, self._opened_at + self.cooldown_s - self._clock())
        raise CircuitOpen(self.name, remaining)

    def record_success(self) -> None:
        if self._state != "closed":
            log.info("upstream %s: probe succeeded, circuit closed", self.name)
        self._state, self._failures, self._probe_in_flight = "closed", 0, False

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or self._failures >= self.failure_threshold:
            if self._state != "open":
                log.warning("upstream %s: circuit open after %d consecutive failures; retrying in %.0f s",
                            self.name, self._failures, self.cooldown_s)
            self._state, self._opened_at, self._probe_in_flight = "open", self._clock(), False

    def trip(self) -> None:
        """Open now, without waiting for the failure threshold: the network looks down, and
        each further attempt would cost a whole connect timeout before the local answer."""
        if self._state != "open":
            log.warning("upstream %s: unreachable (network down?); circuit open, retrying in %.0f s",
                        self.name, self.cooldown_s)
        self._failures += 1
        self._state, self._opened_at, self._probe_in_flight = "open", self._clock(), False

    def record_abandoned(self, was_probe: bool) -> None:
        """The caller left before an outcome (client disconnect): no verdict, free the probe."""
        if was_probe:
            self._probe_in_flight = False

    def _current(self) -> BreakerStateName:
        if self._state == "open" and self._clock() >= self._opened_at + self.cooldown_s:
            self._state = "half_open"
        return self._state
