"""[metrics]: what the daemon tells Prometheus (GET /metrics)."""

from __future__ import annotations

from pydantic import Field

from localllm.config.section import Section


class MetricsSettings(Section):
    enabled: bool = Field(True, description="Serve GET /metrics in Prometheus text format (under the API's "
                          "token and Host rules).")
    cloud_wh_per_1k_tokens: float = Field(0.6, ge=0, description=(
        "Energy a cloud model spends per 1,000 answer tokens, for `localllm stats`' comparison. Default: "
        "Epoch AI's 2025 estimate of about 0.3 Wh for a typical GPT-4o query of about 500 output tokens; "
        "a rough public figure, not a measurement: set your provider's if it publishes one."))
