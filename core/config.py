"""One typed configuration: defaults < TOML file < LOCALLLM_* environment < CLI flags.

Every field has a default, a description and a validation. ``load_settings``
returns the validated settings together with where each value came from, which
``localllm config show`` prints. Unknown keys and bad values fail loudly, naming
the key and the source that set it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from . import paths
from .decision_settings import CascadeSettings, GuardSettings, PolicySettings, RouterSettings
from .errors import ConfigError
from .fallback.upstream_settings import UpstreamSettings, check_unique_names

DEFAULT_MODEL = "smollm2-135m-instruct"
ENV_PREFIX = "LOCALLLM_"


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Address to bind. Anything but loopback requires api_token.")
    port: int = Field(8765, ge=1, le=65535, description="TCP port to listen on.")
    api_token: SecretStr | None = Field(
        None, description="Bearer token clients must send. Required when host is not loopback. "
        "Prefer `localllm token set` (OS keyring) over writing it here.")
    token_namespaces: list[str] = Field(
        default_factory=list, description="Namespaces with a token of their own (`localllm token set --namespace "
        "NS`): requests with that token always use that namespace.")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="Extra Host header names accepted besides loopback names "
        "(DNS-rebinding protection).")
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed to call the API from a browser. Empty: CORS off.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    header_timeout_s: float = Field(10.0, gt=0, le=300, description="Seconds a client has to send request headers.")


class EngineSettings(_Section):
    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Model served by default (catalog name or file in the models dir).")
    n_ctx: int = Field(2048, ge=128, le=1_048_576,
                       description="Context window per sequence in tokens (one request's prompt and answer).")
    n_parallel: int = Field(4, ge=1, le=256, description=(
        "Requests generated at once, batched into one llama.cpp decode. The KV cache holds "
        "n_ctx x n_parallel tokens; 1 = one request at a time."))
    n_threads: int = Field(0, ge=0, le=512, description="CPU threads for generation; 0 = number of physical cores.")
    n_gpu_layers: int | Literal["all"] = Field(
        0, description="Layers offloaded to the GPU: 0, N or 'all'. Needs a CUDA/Metal build of llama-cpp-python.")
    n_batch: int = Field(512, ge=1, le=65536, description=(
        "Most tokens in one decode step (all sequences together): a newcomer's prompt is fed in "
        "chunks of what is left after one token per running sequence, so streams keep flowing."))
    kv_cache_type: Literal["q8_0", "f16-q8_0", "f16"] = Field("q8_0", description=(
        "KV cache precision, keys-values. q8_0 (both: the least memory) and f16-q8_0 (f16 keys, q8_0 "
        "values) keep answers independent of what else is in the batch: llama.cpp's CPU attention then "
        "takes one path for any batch shape. f16 (both) lets long prompts use tiled attention, whose "
        "rounding depends on the batch, so greedy answers can vary under load."))
    prompt_packing: Literal["auto", "all"] = Field("auto", description=(
        "How the prompts of requests that arrive together share decode steps. auto: another "
        "prompt joins a step only when the measured cost of a step says first tokens come out "
        "sooner that way (on a CPU about one prompt per step, so the first request streams after "
        "its own prompt rather than after everyone's; on a GPU many per step). all: every "
        "waiting prompt that fits goes into the next step (llama.cpp server's way)."))
    queue_size: int = Field(16, ge=1, le=10_000, description="Requests waiting for the engine before 503 queue_full.")
    default_max_tokens: int = Field(512, ge=1, description="max_tokens when a request does not set one.")

    @field_validator("n_gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() != "all":
            try:
                value = int(value)
            except ValueError:
                raise ValueError("must be 0, a positive number of layers, or 'all'") from None
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 0, a positive number of layers, or 'all'")
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _batch_holds_every_sequence(self) -> EngineSettings:
        if self.n_batch < self.n_parallel:
            raise ValueError(f"engine.n_batch ({self.n_batch}) must be at least engine.n_parallel "
                             f"({self.n_parallel}): each decode step carries one token per running sequence")
        return self

    @property
    def threads(self) -> int:
        return self.n_threads or physical_cores()

    @property
    def gpu_layers(self) -> int:
        return -1 if self.n_gpu_layers == "all" else int(self.n_gpu_layers)


class StoreSettings(_Section):
    log_prompts: bool = Field(False, description="Keep prompt and answer text in the request log (off: only a hash).")


class CacheSettings(_Section):
    enabled: bool = Field(True, description="Answer repeated and paraphrased questions from the semantic cache.")
    embedder: Literal["auto", "sentence-transformers", "onnx"] = Field(
        "auto", description="Embedding backend: onnx (int8, no PyTorch), sentence-transformers (PyTorch), "
        "auto = onnx when installed (faster, and PyTorch in the daemon slows llama.cpp down), else "
        "sentence-transformers.")
    embedder_threads: int = Field(
        0, ge=0, le=512, description="CPU threads for embedding prompts; a number fixes it for either backend. "
        "0 = automatic (onnx backend): all physical cores while no model is generating, one while one is, "
        "so the embedder's threads do not "
        "fight llama.cpp's for the cores (a 2-thread embedder beside a 2-thread decode on 2 cores cut decoding "
        "from 88 to 31 tokens/s; one thread: 62).")
    ttl_s: float = Field(7 * 24 * 3600, gt=0, description="Seconds a cached answer stays valid.")
    max_entries: int = Field(100_000, ge=1, description="Entries kept; the least recently used go first.")
    allow_nondeterministic: bool = Field(
        False, description="Also cache answers sampled with temperature > 0 and no seed.")


class BudgetSettings(_Section):
    daily_usd: float | None = Field(None, ge=0, description="Spend cap per UTC day across all upstreams.")
    monthly_usd: float | None = Field(None, ge=0, description="Spend cap per UTC month across all upstreams.")
    default_max_tokens: int = Field(
        1024, ge=1, description="max_tokens sent upstream when a request sets none, so the reserved worst "
        "case is a real bound.")


class RoutingSettings(_Section):
    local_failure_upstream: str | None = Field(
        None, description="Upstream that answers when the local engine cannot (model loading or failed, queue "
        "full). Unset: answer 503. What may reach it is decided by [policy], as for any egress.")


class ModelOverride(_Section):
    """Per-model engine settings (``[models."NAME"]``); unset fields use ``[engine]``."""

    n_ctx: int | None = Field(None, ge=128, le=1_048_576, description="Context window for this model.")
    n_threads: int | None = Field(None, ge=0, le=512, description="CPU threads for this model.")
    n_gpu_layers: int | Literal["all"] | None = Field(None, description="GPU layers for this model.")
    n_batch: int | None = Field(None, ge=1, le=65536, description="Batch size for this model.")
    n_parallel: int | None = Field(None, ge=1, le=256, description="Parallel sequences for this model.")


class Settings(_Section):
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


@dataclass
class LoadedSettings:
    settings: Settings
    # dotted key -> "default" | "file PATH" | "env NAME" | "flag --NAME"
    sources: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None


_TABLES = ("models", "upstreams", "guard.custom_terms", "guard.custom_patterns")  # set in the file only


def _leaf_fields(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, type]:
    """Dotted key -> annotation for every scalar setting that env vars may set."""
    leaves: dict[str, type] = {}
    for name, info in (model or Settings).model_fields.items():
        annotation, dotted = info.annotation, prefix + name
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            leaves.update(_leaf_fields(annotation, dotted + "."))  # e.g. policy.cloud.secret
        elif dotted not in _TABLES:
            leaves[dotted] = annotation
    return leaves


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return any(get_origin(arg) is list for arg in get_args(annotation))


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in _TABLES:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}. Fix or remove it.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}.") from None


def load_settings(flags: dict[str, Any] | None = None, *, config_path: Path | None = None,
                  environ: dict[str, str] | None = None) -> LoadedSettings:
    """Build the effective settings. ``flags`` maps dotted keys to CLI values (None = not given)."""
    environ = os.environ if environ is None else environ
    path = config_path or paths.config_file()
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}

    if path.exists():
        raw = _read_toml(path)
        for dotted in _flatten(raw):
            sources[dotted] = f"file {path}"

    leaves = _leaf_fields()
    for dotted, annotation in leaves.items():
        name = env_name(dotted)
        if name in environ:
            value: Any = environ[name]
            if _is_list(annotation):
                value = [item.strip() for item in value.split(",") if item.strip()]
            _set(raw, dotted, value)
            sources[dotted] = f"env {name}"

    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        if dotted not in leaves:
            raise ConfigError(f"Unknown setting {dotted!r}.")
        _set(raw, dotted, value)
        sources[dotted] = f"flag --{dotted.split('.')[-1].replace('_', '-')}"

    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe_validation(exc, sources, path)) from None

    for dotted in leaves:
        sources.setdefault(dotted, "default")
    return LoadedSettings(settings=settings, sources=sources, config_path=path if path.exists() else None)


def _describe_validation(exc: ValidationError, sources: dict[str, str], path: Path) -> str:
    problems = []
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        # pydantic appends the union branch name (e.g. "int") to the location.
        while dotted and dotted not in sources and "." in dotted:
            dotted = dotted.rsplit(".", 1)[0]
        message = error["msg"].removeprefix("Value error, ")
        if not dotted:  # a check across settings: the message names the keys itself
            problems.append(message)
            continue
        source = sources.get(dotted, f"file {path}")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {dotted!r} ({source})")
        else:
            problems.append(f"{dotted}: {message} ({source})")
    unique = list(dict.fromkeys(problems))
    return "Invalid configuration: " + "; ".join(unique) + "."


def describe_settings(loaded: LoadedSettings) -> list[tuple[str, str, str, str]]:
    """(key, value, source, description) for every setting; secrets are masked."""
    rows = []
    settings = loaded.settings
    for dotted in _leaf_fields():
        *parents, field_name = dotted.split(".")
        holder = settings
        for part in parents:
            holder = getattr(holder, part)
        value = getattr(holder, field_name)
        info = type(holder).model_fields[field_name]
        if isinstance(value, SecretStr):
            shown = "(set, hidden)"
        elif value is None:
            shown = "(unset)"
        else:
            shown = str(value)
        if dotted == "models_dir":
            shown = f"{settings.resolved_models_dir}" + (" (default)" if value is None else "")
        rows.append((dotted, shown, loaded.sources.get(dotted, "default"), info.description or ""))
    for upstream in settings.upstreams:
        described = f"{upstream.kind} {upstream.url} model={upstream.model} trust={upstream.trust}"
        rows.append((f"upstreams.{upstream.name}", described, loaded.sources.get("upstreams", "file"), ""))
    for kind in ("custom_terms", "custom_patterns"):
        for name, value in getattr(settings.guard, kind).items():
            # The terms themselves are sensitive (customer names...): show how many, not which.
            shown = f"{len(value)} terms" if isinstance(value, list) else "(pattern set)"
            rows.append((f"guard.{kind}.{name}", shown, loaded.sources.get(f"guard.{kind}", "file"), ""))
    for model, override in settings.models.items():
        for name, value in override.model_dump().items():
            if value is not None:
                rows.append((f'models."{model}".{name}', str(value), loaded.sources.get("models", "file"), ""))
    return rows
