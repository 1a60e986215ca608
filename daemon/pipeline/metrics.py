"""What the daemon tells Prometheus: counters and histograms fed by each finished request, and gauges
read from the models and upstreams at scrape time. Built on the official ``prometheus-client``, in a
registry of its own (not the process-wide default), so two daemons in one process never mix."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from localllm.config.metrics import MetricsSettings
from localllm.config.upstreams import first_cloud_upstream
from localllm.decision.guard.scan import Finding
from localllm.store.request_log import RequestRecord
from localllm.store.usage_stats import cloud_cost_usd, cloud_energy_wh

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: first tokens on a CPU take tens of milliseconds to seconds, whole answers up to minutes.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class CloudReference:
    """What an answer served on the device would have cost from the cloud: an estimate of the energy per 1,000
    answer tokens (``metrics.cloud_wh_per_1k_tokens``) and, with a cloud upstream configured, the first one's
    prices (USD per million tokens), as ``localllm stats`` prices it."""

    wh_per_1k_tokens: float
    upstream: str | None = None
    price_input_per_mtok: float = 0.0
    price_output_per_mtok: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> CloudReference:
        upstream = first_cloud_upstream(settings.upstreams)
        if upstream is None:
            return cls(settings.metrics.cloud_wh_per_1k_tokens)
        return cls(settings.metrics.cloud_wh_per_1k_tokens, upstream.name, upstream.price_input_per_mtok,
                   upstream.price_output_per_mtok)


class DaemonMetrics:
    def __init__(self, *, models: Callable[[], Iterable] = lambda: (), upstreams: Callable[[], Iterable] = lambda: (),
                 model_memory: Callable[[object], int] = lambda scheduler: 0,
                 cloud: CloudReference | None = None):
        self.cloud = cloud or CloudReference(MetricsSettings().cloud_wh_per_1k_tokens)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("localllm_requests", "Requests answered, by where they were answered.",
                                ("route", "model", "status"), registry=self.registry)
        self.ttft = Histogram("localllm_time_to_first_token_seconds", "Time to the first token of an answer.",
                              ("route", "model"), buckets=_TTFT_BUCKETS, registry=self.registry)
        self.duration = Histogram("localllm_request_duration_seconds", "Time to the whole answer.",
                                  ("route", "model"), buckets=_DURATION_BUCKETS, registry=self.registry)
        self.generated = Counter("localllm_tokens_generated", "Answer tokens.", ("model",), registry=self.registry)
        self.prompt = Counter("localllm_prompt_tokens", "Prompt tokens.", ("model",), registry=self.registry)
        self.cache = Counter("localllm_cache_lookups", "Semantic cache lookups by outcome.", ("outcome",),
                             registry=self.registry)
        self.cost = Counter("localllm_upstream_cost_usd", "Spend at upstreams, at their configured prices.",
                            ("upstream",), registry=self.registry)
        self.findings = Counter("localllm_guard_findings", "Sensitive values the guard found, by type.",
                                ("type",), registry=self.registry)
        self.energy = Counter("localllm_energy_joules", "Energy of local generation (source: rapl = measured, "
                              "estimated = CPU time x engine.watts_per_core).", ("route", "model", "source"),
                              registry=self.registry)
        self.saved_usd = Counter("localllm_cloud_equivalent_usd", "What the answers served on this device (engine "
                                 "or cache) would have cost at the first cloud upstream's prices.", ("priced_as",),
                                 registry=self.registry)
        self.saved_energy = Counter("localllm_cloud_equivalent_energy_joules", "Estimated energy the cloud would "
                                    "have spent on the answers served on this device (metrics.cloud_wh_per_1k_tokens "
                                    "per 1,000 answer tokens).", registry=self.registry)
        self.registry.register(_StateCollector(models, upstreams, model_memory))

    def observe(self, record: RequestRecord) -> None:
        """One finished request (its request-log row)."""
        route = record_route(record)
        model = record.model or "none"
        self.requests.labels(route, model, str(record.status)).inc()
        if record.status != 200:
            return
        if record.ttft_ms is not None:
            self.ttft.labels(route, model).observe(record.ttft_ms / 1000)
        if record.latency_ms is not None:
            self.duration.labels(route, model).observe(record.latency_ms / 1000)
        if record.completion_tokens:
            self.generated.labels(model).inc(record.completion_tokens)
        if record.prompt_tokens:
            self.prompt.labels(model).inc(record.prompt_tokens)
        if record.cache is not None:
            self.cache.labels(record.cache).inc()
        if record.upstream is not None and record.cost_usd:
            self.cost.labels(record.upstream).inc(record.cost_usd)
        if record.energy_joules:
            self.energy.labels(route, model, record.energy_source or "estimated").inc(record.energy_joules)
        if route in ("local", "cache"):
            self._count_savings(record.prompt_tokens or 0, record.completion_tokens or 0)

    def _count_savings(self, prompt_tokens: int, answer_tokens: int) -> None:
        """The same arithmetic as ``localllm stats``' comparison."""
        if self.cloud.upstream is not None:
            self.saved_usd.labels(self.cloud.upstream).inc(cloud_cost_usd(
                prompt_tokens, answer_tokens, self.cloud.price_input_per_mtok, self.cloud.price_output_per_mtok))
        self.saved_energy.inc(cloud_energy_wh(answer_tokens, self.cloud.wh_per_1k_tokens) * 3600)

    def observe_findings(self, findings: Sequence[Finding]) -> None:
        for finding in findings:
            self.findings.labels(finding.entity_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def record_route(record: RequestRecord) -> str:
    """local | cache | cloud | onprem, or blocked: the policy kept it from the upstream it was meant for."""
    if (record.fallback_reason or "").startswith("policy_block"):
        return "blocked"
    return record.route or "none"


class _StateCollector:
    """Gauges read at scrape time: each model's queue and memory, each upstream's circuit."""

    def __init__(self, models, upstreams, model_memory):
        self.models, self.upstreams, self.model_memory = models, upstreams, model_memory

    def describe(self):
        return []  # read at collect time; nothing to check at registration

    def collect(self):
        queue = GaugeMetricFamily("localllm_queue_depth", "Requests waiting for a model's engine.", labels=["model"])
        memory = GaugeMetricFamily("localllm_model_memory_bytes", "Memory a loaded model takes (estimated from "
                                   "its GGUF: weights, KV cache, buffers).", labels=["model"])
        for scheduler in self.models():
            queue.add_metric([scheduler.model_name], scheduler.waiting)
            loaded = scheduler.state in ("loading", "ready")
            memory.add_metric([scheduler.model_name], self.model_memory(scheduler) if loaded else 0)
        circuit = GaugeMetricFamily("localllm_upstream_circuit_open", "1 while an upstream's circuit breaker is "
                                    "open (requests go elsewhere).", labels=["upstream"])
        for state in self.upstreams():  # BreakerState of each upstream
            circuit.add_metric([state.name], 1.0 if state.state == "open" else 0.0)
        yield from (queue, memory, circuit)
