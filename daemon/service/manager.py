"""Install, remove and inspect the service with the platform's own manager: systemctl (per user or
system-wide), launchctl, or schtasks. A step that fails says what was done and what to run by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from localllm.daemon.service.units import LAUNCHD_LABEL, SERVICE_NAME, SYSTEM_HOME, Kind, ServiceSpec, render
from localllm.errors import LocalLLMError

Runner = Callable[[list[str]], subprocess.CompletedProcess]


class ServiceError(LocalLLMError):
    error_type = "service_error"


@dataclass(frozen=True)
class Placement:
    kind: Kind
    path: Path
    enable: tuple[tuple[str, ...], ...]
    disable: tuple[tuple[str, ...], ...]
    status: tuple[str, ...]
    encoding: str = "utf-8"


def default_kind() -> Kind:
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform == "win32":
        return "windows-task"
    return "systemd-system" if os.geteuid() == 0 else "systemd-user"


def placement(kind: Kind, home_dir: Path | None = None) -> Placement:
    home_dir = home_dir or Path.home()
    if kind == "systemd-user":
        user = ("systemctl", "--user")
        return Placement(kind, home_dir / ".config" / "systemd" / "user" / f"{SERVICE_NAME}.service",
                         ((*user, "daemon-reload"), (*user, "enable", "--now", SERVICE_NAME)),
                         ((*user, "disable", "--now", SERVICE_NAME), (*user, "daemon-reload")),
                         (*user, "is-active", SERVICE_NAME))
    if kind == "systemd-system":
        return Placement(kind, Path("/etc/systemd/system") / f"{SERVICE_NAME}.service",
                         (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", SERVICE_NAME)),
                         (("systemctl", "disable", "--now", SERVICE_NAME), ("systemctl", "daemon-reload")),
                         ("systemctl", "is-active", SERVICE_NAME))
    if kind == "launchd":
        domain = f"gui/{os.getuid()}" if hasattr(os, "getuid") else "gui/0"
        path = home_dir / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        return Placement(kind, path, (("launchctl", "bootstrap", domain, str(path)),),
                         (("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"),),
                         ("launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"))
    folder = Path(os.environ.get("LOCALAPPDATA", home_dir / "AppData" / "Local")) / "localllm"
    path = folder / "localllm-task.xml"
    return Placement(kind, path, (("schtasks", "/Create", "/TN", SERVICE_NAME, "/XML", str(path), "/F"),
                                  ("schtasks", "/Run", "/TN", SERVICE_NAME)),
                     (("schtasks", "/End", "/TN", SERVICE_NAME), ("schtasks", "/Delete", "/TN", SERVICE_NAME, "/F")),
                     ("schtasks", "/Query", "/TN", SERVICE_NAME), encoding="utf-16")


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return subprocess.CompletedProcess(command, 127, "", f"{command[0]}: command not found")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 124, "", f"{command[0]} did not answer within 60 s")


def install(kind: Kind, spec: ServiceSpec, *, home_dir: Path | None = None, run: Runner = _run) -> Placement:
    """Write the service file and start the service; raises ServiceError naming what is left to do."""
    where = placement(kind, home_dir)
    if kind == "systemd-system":
        _check_system_install(spec, run)
    where.path.parent.mkdir(parents=True, exist_ok=True)
    temporary = where.path.with_name(where.path.name + ".tmp")
    temporary.write_text(render(kind, spec), encoding=where.encoding)
    os.replace(temporary, where.path)
    _run_all(where.enable, run, f"Wrote {where.path}, but starting the service failed")
    return where


def uninstall(kind: Kind, *, home_dir: Path | None = None, run: Runner = _run) -> Placement:
    where = placement(kind, home_dir)
    if not where.path.exists():
        raise ServiceError(f"No {kind} service is installed ({where.path} does not exist).")
    problems = [line for command in where.disable if (line := _failure(command, run))]
    where.path.unlink()
    if problems:  # the file is gone either way: the manager forgets it at its next reload
        raise ServiceError(f"Removed {where.path}; stopping it said: {problems[0]}")
    return where


def status(kind: Kind, *, home_dir: Path | None = None, run: Runner = _run) -> tuple[Placement, bool, str]:
    """(where, installed, what the manager says of it)."""
    where = placement(kind, home_dir)
    if not where.path.exists():
        return where, False, "not installed"
    result = run(list(where.status))
    said = (result.stdout or result.stderr).strip().splitlines()
    return where, True, said[0] if said else f"exit {result.returncode}"


def _check_system_install(spec: ServiceSpec, run: Runner) -> None:
    if os.geteuid() != 0:
        raise ServiceError("A system-wide service is installed by root: run `sudo localllm service install "
                           "--system`, or install it for your user with `localllm service install --user`.")
    executable = spec.command[0]
    if executable.startswith(("/home/", "/root/")):
        raise ServiceError(f"The system service cannot run {executable}: it is sandboxed away from /home and "
                           "/root (ProtectHome). Install localllm where the service user can run it, e.g. "
                           "`python3 -m venv /opt/localllm && /opt/localllm/bin/pip install localllm`, then run "
                           "`sudo /opt/localllm/bin/localllm service install --system`.")
    if run(["getent", "passwd", "localllm"]).returncode != 0:
        created = run(["useradd", "--system", "--home-dir", spec.home or SYSTEM_HOME, "--create-home",
                       "--shell", "/usr/sbin/nologin", "localllm"])
        if created.returncode != 0:
            raise ServiceError(f"Could not create the service user localllm: {created.stderr.strip()}")


def _run_all(commands, run: Runner, doing: str) -> None:
    for command in commands:
        problem = _failure(command, run)
        if problem:
            by_hand = " && ".join(" ".join(c) for c in commands)
            raise ServiceError(f"{doing}: {problem}. Once that is fixed, run: {by_hand}")


def _failure(command: tuple[str, ...], run: Runner) -> str | None:
    result = run(list(command))
    if result.returncode == 0:
        return None
    detail = (result.stderr or result.stdout).strip().splitlines()
    return f"`{' '.join(command)}` said: {detail[0] if detail else f'exit {result.returncode}'}"
