"""[metrics]: what the daemon tells Prometheus (GET /metrics)."""

from __future__ import annotations

from pydantic import Field

from localllm.config.section import Section


class MetricsSettings(Section):
    enabled: bool = Field(True, description="Serve GET /metrics in Prometheus text format (under the API's "
                          "token and Host rules).")
