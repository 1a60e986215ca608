"""Spend and savings from the request log, for `localllm stats`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def _since(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days - 1)).strftime("%Y-%m-%d")


def upstream_spend(db, days: int) -> list[dict]:
    """Per day and upstream: requests, tokens and USD spent."""
    return [dict(row) for row in db.query(
        "SELECT substr(created_at, 1, 10) AS day, upstream, COUNT(*) AS requests, "
        "COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, COALESCE(SUM(completion_tokens), 0) AS completion_tokens, "
        "ROUND(COALESCE(SUM(cost_usd), 0), 6) AS cost_usd FROM requests "
        "WHERE upstream IS NOT NULL AND route IN ('cloud', 'onprem') AND created_at >= ? "
        "GROUP BY day, upstream ORDER BY day, upstream", [_since(days)])]


def local_answers(db, days: int) -> list[dict]:
    """Per day: answers served on the device (engine or cache), and their tokens."""
    return [dict(row) for row in db.query(
        "SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS requests, "
        "SUM(route = 'cache') AS from_cache, COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, "
        "COALESCE(SUM(completion_tokens), 0) AS completion_tokens FROM requests "
        "WHERE route IN ('local', 'cache') AND status = 200 AND created_at >= ? "
        "GROUP BY day ORDER BY day", [_since(days)])]


def cloud_cost_usd(prompt_tokens: int, answer_tokens: int, price_input_per_mtok: float,
                   price_output_per_mtok: float) -> float:
    """What these tokens cost at a cloud upstream's prices (USD per million tokens)."""
    return (prompt_tokens * price_input_per_mtok + answer_tokens * price_output_per_mtok) / 1e6


def cloud_energy_wh(answer_tokens: int, wh_per_1k_tokens: float) -> float:
    """The cloud's estimated energy for these answer tokens (``metrics.cloud_wh_per_1k_tokens``)."""
    return answer_tokens * wh_per_1k_tokens / 1000


def savings_usd(row: dict, price_input_per_mtok: float, price_output_per_mtok: float) -> float:
    """What a day's local answers would have cost at a cloud upstream's prices."""
    return round(cloud_cost_usd(row["prompt_tokens"], row["completion_tokens"], price_input_per_mtok,
                                price_output_per_mtok), 6)


PROMPT_BINS = ((0, 256, "<256"), (256, 1024, "256-1k"), (1024, 1 << 62, ">=1k"))
ANSWER_BINS = ((0, 64, "<64"), (64, 256, "64-256"), (256, 1 << 62, ">=256"))


def traffic_summary(db, days: int) -> dict:
    """Latency and first-token percentiles per route, cost per 1,000 requests, cache hit rate, the share
    answered on the device, and energy per 1,000 requests and tokens (binned by prompt and answer length)."""
    rows = [dict(row) for row in db.query(
        "SELECT route, cache, latency_ms, ttft_ms, prompt_tokens, completion_tokens, cost_usd, energy_joules, "
        "energy_source FROM requests WHERE status = 200 AND route IS NOT NULL AND created_at >= ?", [_since(days)])]
    by_route: dict[str, list[dict]] = {}
    for row in rows:
        by_route.setdefault(row["route"], []).append(row)
    routes = {route: {"requests": len(group), "latency_ms": _percentiles([r["latency_ms"] for r in group]),
                      "ttft_ms": _percentiles([r["ttft_ms"] for r in group])}
              for route, group in sorted(by_route.items())}
    looked = [r for r in rows if r["cache"] in ("hit", "miss", "rejected")]
    spent = sum(r["cost_usd"] or 0.0 for r in rows)
    measured = [r for r in rows if r["energy_joules"] is not None]
    return {
        "requests": len(rows), "routes": routes,
        "cost_usd_per_1k_requests": round(spent / len(rows) * 1000, 6) if rows else None,
        "cache_hit_rate": round(sum(r["cache"] == "hit" for r in looked) / len(looked), 4) if looked else None,
        "answered_on_device": round(sum(r["route"] in ("local", "cache") for r in rows) / len(rows), 4) if rows
        else None,
        "energy": _energy(measured),
    }


def _percentiles(values: list) -> dict | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None

    def at(share: float) -> float:
        return round(values[min(int(share * len(values)), len(values) - 1)], 1)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


def _energy(rows: list[dict]) -> dict | None:
    """Wh per 1,000 requests and per 1,000 tokens (prompt + answer) of the local answers with a figure."""
    if not rows:
        return None

    def summary(group: list[dict]) -> dict:
        wh = sum(r["energy_joules"] for r in group) / 3600
        tokens = sum((r["prompt_tokens"] or 0) + (r["completion_tokens"] or 0) for r in group)
        return {"requests": len(group), "wh_per_1k_requests": round(wh / len(group) * 1000, 4),
                "wh_per_1k_tokens": round(wh / tokens * 1000, 4) if tokens else None}

    def binned(key: str, bins) -> dict:
        return {label: summary(group) for low, high, label in bins
                if (group := [r for r in rows if low <= (r[key] or 0) < high])}

    return {**summary(rows), "sources": sorted({r["energy_source"] or "estimated" for r in rows}),
            "by_prompt_tokens": binned("prompt_tokens", PROMPT_BINS),
            "by_answer_tokens": binned("completion_tokens", ANSWER_BINS)}
