"""The files that run `localllm serve` as a service: a systemd unit (per user, or system-wide as an
unprivileged `localllm` user in a hardened sandbox), a macOS launch agent, and a Windows scheduled
task. Rendered here with this installation's own executable; packaging/ holds the same files rendered
with the defaults (a test keeps them identical)."""

from __future__ import annotations

import plistlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

Kind = Literal["systemd-user", "systemd-system", "launchd", "windows-task"]
KINDS: tuple[Kind, ...] = ("systemd-user", "systemd-system", "launchd", "windows-task")

SERVICE_NAME = "localllm"
LAUNCHD_LABEL = "dev.localllm.serve"
SYSTEM_HOME = "/var/lib/localllm"
DEFAULT_EXECUTABLE = "/usr/local/bin/localllm"


@dataclass(frozen=True)
class ServiceSpec:
    """What every kind of service file needs: the command and where its state lives."""

    command: tuple[str, ...]        # argv that starts the daemon, e.g. ("/opt/localllm/bin/localllm", "serve")
    home: str | None = None         # LOCALLLM_HOME for the service (None: the platform's per-user folders)
    stop_timeout_s: int = 45        # how long the supervisor waits after SIGTERM (grace period + margin)
    log_file: str | None = None     # launchd: where the daemon's output goes (an absolute path)

    @classmethod
    def for_this_install(cls, home: str | None, shutdown_grace_s: float) -> ServiceSpec:
        """The command of the localllm this Python runs: its console script beside the interpreter if
        there is one (a venv's bin/), else the interpreter with -m."""
        script = Path(sys.executable).parent / ("localllm.exe" if sys.platform == "win32" else "localllm")
        command = (str(script), "serve") if script.exists() else (sys.executable, "-m", "localllm.cli", "serve")
        log_file = str(Path.home() / "Library" / "Logs" / "localllm.log") if sys.platform == "darwin" else None
        return cls(command, home, int(shutdown_grace_s) + 15, log_file)


def render(kind: Kind, spec: ServiceSpec) -> str:
    return {"systemd-user": _systemd_user, "systemd-system": _systemd_system, "launchd": _launchd,
            "windows-task": _windows_task}[kind](spec)


def _exec_line(command: tuple[str, ...]) -> str:
    # systemd splits ExecStart like a shell would; quote arguments that hold spaces.
    return " ".join(f'"{part}"' if any(c.isspace() for c in part) else part for part in command)


def _systemd_user(spec: ServiceSpec) -> str:
    environment = f"Environment=LOCALLLM_HOME={spec.home}\n" if spec.home else ""
    return f"""# localllm for one user: systemctl --user enable --now localllm (written by `localllm service install`).
[Unit]
Description=localllm - local-first LLM daemon (OpenAI-compatible API on localhost)
After=network.target

[Service]
Type=simple
{environment}ExecStart={_exec_line(spec.command)}
Restart=on-failure
RestartSec=5
TimeoutStopSec={spec.stop_timeout_s}
UMask=0077
NoNewPrivileges=yes
LockPersonality=yes
RestrictSUIDSGID=yes

[Install]
WantedBy=default.target
"""


def _systemd_system(spec: ServiceSpec) -> str:
    home = spec.home or SYSTEM_HOME
    return f"""# localllm as a system service, run by the unprivileged user `localllm`
# (`localllm service install --system` creates it). Its state lives in {home}. Binding beyond
# loopback needs an API token: put LOCALLLM_SERVER_API_TOKEN=... in /etc/localllm/env (mode 0600).
[Unit]
Description=localllm - local-first LLM daemon (OpenAI-compatible API on localhost)
After=network.target

[Service]
Type=simple
User=localllm
Group=localllm
Environment=LOCALLLM_HOME={home}
EnvironmentFile=-/etc/localllm/env
ExecStart={_exec_line(spec.command)}
Restart=on-failure
RestartSec=5
TimeoutStopSec={spec.stop_timeout_s}
UMask=0077

# Hardening: the daemon needs its own state directory and the network, nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths={home}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy=multi-user.target
"""


def _launchd(spec: ServiceSpec) -> str:
    agent: dict = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},  # restart after a crash, not after a clean stop
        "ProcessType": "Interactive",
        "Umask": 0o077,
        "ExitTimeOut": spec.stop_timeout_s,
    }
    if spec.log_file:
        agent["StandardErrorPath"] = agent["StandardOutPath"] = spec.log_file
    if spec.home:
        agent["EnvironmentVariables"] = {"LOCALLLM_HOME": spec.home}
    header = ("<!-- localllm as a per-user launch agent (runs as you, never as root), written by `localllm service "
              "install`:\n     launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/dev.localllm.serve.plist -->\n")
    body = plistlib.dumps(agent, sort_keys=False).decode()
    first, _, rest = body.partition("\n<plist")  # the comment goes after the XML declaration and DOCTYPE
    declaration, _, doctype = first.partition("\n")
    return f"{declaration}\n{doctype}\n{header}<plist{rest}"


def _windows_task(spec: ServiceSpec) -> str:
    program, *arguments = spec.command
    if spec.home:  # Task Scheduler has no environment setting: set it through cmd
        arguments = ["/c", f"set LOCALLLM_HOME={spec.home}&&", program, *arguments]
        program = "cmd.exe"
    return f"""<?xml version="1.0" encoding="UTF-16"?>
<!-- localllm at logon for the current user, written by `localllm service install`:
     schtasks /Create /TN localllm /XML localllm-task.xml -->
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>localllm - local-first LLM daemon (OpenAI-compatible API on localhost)</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger><Enabled>true</Enabled></LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author"><LogonType>InteractiveToken</LogonType><RunLevel>LeastPrivilege</RunLevel></Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure><Interval>PT1M</Interval><Count>999</Count></RestartOnFailure>
    <Enabled>true</Enabled>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(program)}</Command>
      <Arguments>{escape(" ".join(_windows_quote(a) for a in arguments))}</Arguments>
    </Exec>
  </Actions>
</Task>
"""


def _windows_quote(argument: str) -> str:
    return f'"{argument}"' if " " in argument and not argument.endswith("&&") else argument
