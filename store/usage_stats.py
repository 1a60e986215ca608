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


def savings_usd(row: dict, price_input_per_mtok: float, price_output_per_mtok: float) -> float:
    """What a day's local answers would have cost at a cloud upstream's prices."""
    return round((row["prompt_tokens"] * price_input_per_mtok + row["completion_tokens"] * price_output_per_mtok)
                 / 1e6, 6)
