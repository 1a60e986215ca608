"""Reading the configuration: defaults < TOML file < LOCALLLM_* environment < CLI flags.

``load_settings`` returns the validated settings together with where each value
came from, which ``localllm config show`` prints. Unknown keys and bad values
fail loudly, naming the key and the source that set it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError

from localllm import paths
from localllm.config.settings import Settings
from localllm.errors import ConfigError

ENV_PREFIX = "LOCALLLM_"


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
