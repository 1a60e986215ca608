"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from localllm import paths
from localllm.config.decision import CascadeSettings, GuardSettings, PolicySettings, RouterSettings
from localllm.config.engine import EngineSettings, ModelOverride
from localllm.config.metrics import MetricsSettings
from localllm.config.section import Section
from localllm.config.server import ServerSettings
from localllm.config.store import CacheSettings, StoreSettings
from localllm.config.upstreams import BudgetSettings, RoutingSettings, UpstreamSettings, check_unique_names


class Settings(Section):
    models_dir: Path | None = Field(None, description="Where GGUF models are kept. Default: <data dir>/models.")
    server: ServerSettings = Field(default_factory=ServerSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    router: RouterSettings = Field(default_factory=RouterSettings)
    cascade: CascadeSettings = Field(default_factory=CascadeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    models: dict[str, ModelOverride] = Field(default_factory=dict, description="Per-model engine overrides.")
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list, description="Stronger models elsewhere ([[upstreams]] tables): cloud APIs or on-prem.")

    @field_validator("upstreams")
    @classmethod
    def _unique_upstreams(cls, value: list[UpstreamSettings]) -> list[UpstreamSettings]:
        check_unique_names(value)
        return value

    @model_validator(mode="after")
    def _named_upstreams_exist(self) -> Settings:
        names = {u.name for u in self.upstreams}
        for key, name in (("routing.local_failure_upstream", self.routing.local_failure_upstream),
                          ("router.escalate_to", self.router.escalate_to)):
            if name is not None and name not in names:
                raise ValueError(f"{key} names {name!r}, which is not in [[upstreams]]")
        return self

    @property
    def resolved_models_dir(self) -> Path:
        return (self.models_dir or paths.default_models_dir()).expanduser()

    def engine_for(self, model: str) -> EngineSettings:
        override = self.models.get(model)
        if override is None:
            return self.engine
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return EngineSettings.model_validate({**self.engine.model_dump(), **changes, "model": model})
