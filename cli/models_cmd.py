"""`localllm models list|pull|rm|info` and `localllm pull`: the GGUF files in the models dir."""

from __future__ import annotations

import json
import sys
import time

import click

from localllm.cli.context import load_cli_settings, user_errors
from localllm.daemon.engine.fallback_templates import family_format
from localllm.daemon.models.catalog import CATALOG, entry_for_filename
from localllm.daemon.models.gguf_info import read_gguf_info
from localllm.daemon.models.model_files import ModelFile, ModelFiles
from localllm.daemon.models.puller import pull


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _human_count(count: int) -> str:
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= divisor:
            return f"{count / divisor:.1f}{suffix}"
    return str(count)


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2))


class _PullProgress:
    """Download progress on stderr: one redrawn bar on a terminal, a line per tenth otherwise."""

    BAR_WIDTH = 30

    def __init__(self, label: str):
        self.label = label
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()
        self.drawn = False
        self.last_step = -1

    def __call__(self, done: int, total: int | None) -> None:
        if self.interactive:
            self._redraw(done, total)
            return
        # Logs and CI get a line per 10% (or per 100 MB when the size is unknown), not a redraw per chunk.
        step = done * 10 // total if total else done // 100_000_000
        if step != self.last_step:
            self.last_step = step
            click.echo(f"{self.label}: {self._amount(done, total)}", err=True)

    def _amount(self, done: int, total: int | None) -> str:
        if total:
            return f"{done * 100 // total:3d}%  {_human_size(done)} of {_human_size(total)}"
        return _human_size(done)

    def _redraw(self, done: int, total: int | None) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-3)
        bar = ""
        if total:
            filled = min(self.BAR_WIDTH, done * self.BAR_WIDTH // total)
            bar = "[" + "#" * filled + "-" * (self.BAR_WIDTH - filled) + "] "
        line = f"\r{self.label} {bar}{self._amount(done, total)}  {_human_size(int(done / elapsed))}/s"
        click.echo(line.ljust(100), nl=False, err=True)
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            click.echo("", err=True)


def _models_dir_files() -> tuple[ModelFiles, str]:
    settings = load_cli_settings().settings
    return ModelFiles(settings.resolved_models_dir), settings.engine.model


def _is_default(model: ModelFile, default_model: str) -> bool:
    wanted = default_model.strip().lower()
    return wanted in (model.name.lower(), model.path.stem.lower(), (model.catalog_name or "").lower())


@click.group("models")
def models_group() -> None:
    """List, download, inspect and remove GGUF models."""


@models_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def list_command(as_json: bool) -> None:
    """Show the models in the models dir."""
    files, default_model = _models_dir_files()
    models = files.list()
    if as_json:
        _echo_json([{"name": m.name, "path": str(m.path), "size_bytes": m.size_bytes,
                     "catalog_name": m.catalog_name, "default": _is_default(m, default_model)} for m in models])
        return
    if not models:
        click.echo(f"No models in {files.models_dir} yet. Pull one: localllm pull {next(iter(CATALOG))}")
        return
    width = max(len(m.name) for m in models)
    click.echo(f"{'NAME':<{width}}  {'SIZE':>9}  CATALOG")
    for model in models:
        notes = model.catalog_name or "-"
        if _is_default(model, default_model):
            notes += " (default)"
        click.echo(f"{model.name:<{width}}  {_human_size(model.size_bytes):>9}  {notes}")


@click.command("pull")
@click.argument("source")
@click.option("--sha256", help="Checksum the file must have (64 hex digits); the pull fails otherwise.")
@click.option("--name", help="File name to keep the model under in the models dir (.gguf is added if missing).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def pull_command(source: str, sha256: str | None, name: str | None, as_json: bool) -> None:
    """Download a model into the models dir.

    SOURCE is a catalog name (e.g. smollm2-135m-instruct), hf:ORG/REPO/FILE.gguf[@REVISION],
    an https:// URL (optionally ending #sha256=HEX) or a local .gguf file.
    Interrupted downloads resume when the same command is run again.
    """
    files, _default = _models_dir_files()
    progress = _PullProgress(name or source)
    try:
        result = pull(source, files.models_dir, sha256=sha256, progress=progress, name=name)
    finally:
        progress.finish()
    if as_json:
        _echo_json({"name": result.path.name, "path": str(result.path), "sha256": result.sha256,
                    "size_bytes": result.size, "already_present": result.already_present})
    elif result.already_present:
        click.echo(f"{result.path.name} is already in {result.path.parent}.")
    else:
        click.echo(f"Pulled {result.path.name} ({_human_size(result.size)}, sha256 {result.sha256[:12]}...) "
                   f"into {result.path.parent}.")


models_group.add_command(pull_command)


@models_group.command("rm")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@user_errors
def remove_command(name: str, yes: bool) -> None:
    """Delete a model file (by catalog name or file name)."""
    files, _default = _models_dir_files()
    path = files.resolve(name)
    if not yes:
        click.confirm(f"Delete {path} ({_human_size(path.stat().st_size)})?", abort=True)
    files.remove(path.name)
    click.echo(f"Deleted {path}.")


@models_group.command("info")
@click.argument("name")
@click.option("--sha256", "with_sha256", is_flag=True, help="Also compute the file's sha256 (reads all of it).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@user_errors
def info_command(name: str, with_sha256: bool, as_json: bool) -> None:
    """Show what a model file holds: architecture, parameters, quantization, context length."""
    files, _default = _models_dir_files()
    path = files.resolve(name)
    info = read_gguf_info(path)
    entry = entry_for_filename(path.name)
    data = info.to_dict()
    data["catalog_name"] = entry.name if entry else None
    data["license"] = entry.license if entry else None
    data["license_terms"] = entry.license_terms if entry else None
    if with_sha256:
        data["sha256"] = ModelFile(path.name, path, info.file_size, data["catalog_name"]).sha256
    if as_json:
        _echo_json(data)
        return
    rows = [
        ("file", str(path)),
        ("size", _human_size(info.file_size)),
        ("architecture", info.architecture or "unknown"),
        ("model name", info.name or "unknown"),
        ("parameters", _human_count(info.parameter_count)),
        ("quantization", info.quantization or "unknown"),
        ("context length", f"{info.context_length} tokens" if info.context_length else "unknown"),
        ("chat template", "yes" if info.has_chat_template else
         "no: chat uses its family's turn format" if family_format(info.architecture) else
         "no (chat requests need a template)"),
    ]
    if entry:
        rows.append(("catalog", f"{entry.name} ({entry.license})"))
        if entry.license_terms:
            rows.append(("licence terms", entry.license_terms))
    if with_sha256:
        rows.append(("sha256", data["sha256"]))
    for label, value in rows:
        click.echo(f"{label:<15} {value}")
