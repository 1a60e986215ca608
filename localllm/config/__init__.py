"""One typed configuration: every field has a default, a description and a validation.

Each section lives in a module of its own (server, engine, store, upstreams,
decision); ``Settings`` puts them together and ``load_settings`` reads them
from defaults < TOML file < LOCALLLM_* environment < CLI flags. Every part of
localllm takes its settings from here, and nothing here imports a part.
"""

from localllm.config.decision import (
    CascadeSettings,
    EgressAction,
    GuardSettings,
    PolicySettings,
    RouterSettings,
    TrustPolicy,
)
from localllm.config.engine import DEFAULT_MODEL, EngineSettings, ModelOverride, physical_cores
from localllm.config.loading import ENV_PREFIX, LoadedSettings, describe_settings, env_name, load_settings
from localllm.config.server import ServerSettings
from localllm.config.settings import Settings
from localllm.config.store import CacheSettings, StoreSettings
from localllm.config.upstreams import BudgetSettings, RoutingSettings, UpstreamSettings

__all__ = [
    "DEFAULT_MODEL", "ENV_PREFIX", "BudgetSettings", "CacheSettings", "CascadeSettings", "EgressAction",
    "EngineSettings", "GuardSettings", "LoadedSettings", "ModelOverride", "PolicySettings", "RouterSettings",
    "RoutingSettings", "ServerSettings", "Settings", "StoreSettings", "TrustPolicy", "UpstreamSettings",
    "describe_settings", "env_name", "load_settings", "physical_cores",
]
