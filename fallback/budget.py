"""Spend caps in USD: per UTC day and month, across all upstreams and per upstream.

Before a request goes out, its worst case (every prompt token and max_tokens of
answer at the upstream's prices) is reserved against every cap it falls under;
after, the reservation is settled with the real cost, or released if nothing was
spent. Reserve is a synchronous check-and-add on the event loop thread, so two
concurrent requests can never both squeeze under the same cap. Spend so far is
read from the request log at start-up.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from localllm.config import BudgetSettings
from localllm.config.upstreams import UpstreamSettings
from localllm.fallback.errors import UpstreamError

GLOBAL = "*"


class OverBudget(UpstreamError):
    reason = "budget"
    retryable = False


def periods(now: datetime | None = None) -> tuple[str, str]:
    now = now or datetime.now(UTC)
    return now.strftime("%Y-%m-%d"), now.strftime("%Y-%m")


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """A safe overestimate without the upstream's tokenizer: tokenizers average ~4 characters
    per token in English; 1 per 2 characters plus per-message overhead covers code and other scripts."""
    return sum(math.ceil(len(str(m.get("content") or "")) / 2) + 8 for m in messages) + 8


def worst_case_usd(upstream: UpstreamSettings, prompt_tokens: int, max_tokens: int) -> float:
    return (prompt_tokens * upstream.price_input_per_mtok + max_tokens * upstream.price_output_per_mtok) / 1e6


@dataclass
class Reservation:
    id: int
    upstream: str
    amount: float
    keys: list[tuple[str, str]]  # (scope, period) pairs it counts against


@dataclass
class Budget:
    settings: BudgetSettings
    upstreams: dict[str, UpstreamSettings]
    spent: dict[tuple[str, str], float] = field(default_factory=dict)  # (scope, period) -> settled USD
    _reserved: dict[tuple[str, str], float] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def _caps(self, upstream: str) -> list[tuple[str, str, float]]:
        day, month = periods()
        caps = [(GLOBAL, day, self.settings.daily_usd), (GLOBAL, month, self.settings.monthly_usd)]
        own = self.upstreams[upstream]
        caps += [(upstream, day, own.daily_budget_usd), (upstream, month, own.monthly_budget_usd)]
        return [(scope, period, cap) for scope, period, cap in caps if cap is not None]

    def used(self, key: tuple[str, str]) -> float:
        return self.spent.get(key, 0.0) + self._reserved.get(key, 0.0)

    def refusal(self, upstream: str, amount: float) -> str | None:
        """Why ``amount`` more would break a cap, or None if it fits. Holds nothing."""
        for scope, period, cap in self._caps(upstream):
            if self.used((scope, period)) + amount > cap + 1e-12:
                which = "all upstreams" if scope == GLOBAL else upstream
                return (f"The {'daily' if len(period) == 10 else 'monthly'} budget for {which} (${cap:.2f}) "
                        "would be exceeded; answering locally.")
        return None

    def reserve(self, upstream: str, amount: float) -> Reservation:
        """Hold ``amount`` against every cap, or raise OverBudget and hold nothing."""
        refusal = self.refusal(upstream, amount)
        if refusal is not None:
            raise OverBudget(upstream, refusal, retryable=False)
        day, month = periods()
        keys = [(GLOBAL, day), (GLOBAL, month), (upstream, day), (upstream, month)]
        for key in keys:
            self._reserved[key] = self._reserved.get(key, 0.0) + amount
        return Reservation(next(self._ids), upstream, amount, keys)

    def settle(self, reservation: Reservation, actual: float) -> None:
        for key in reservation.keys:
            self._reserved[key] = self._reserved.get(key, 0.0) - reservation.amount
            self.spent[key] = self.spent.get(key, 0.0) + actual
        reservation.amount = 0.0

    def release(self, reservation: Reservation) -> None:
        self.settle(reservation, 0.0)


def spent_from_log(db) -> dict[tuple[str, str], float]:
    """Settled spend per (upstream and all, day and month) from the request log."""
    day, month = periods()
    spent: dict[tuple[str, str], float] = {}
    for row in db.query(
            "SELECT upstream, substr(created_at, 1, 10) AS day, SUM(cost_usd) AS usd FROM requests "
            "WHERE cost_usd IS NOT NULL AND created_at >= ? GROUP BY upstream, day", [month + "-01"]):
        for scope in (GLOBAL, row["upstream"]):
            spent[(scope, month)] = spent.get((scope, month), 0.0) + row["usd"]
            if row["day"] == day:
                spent[(scope, day)] = spent.get((scope, day), 0.0) + row["usd"]
    return spent
