"""The service files: rendered for this installation, valid for their managers (systemd-analyze verify,
plistlib, the Task Scheduler's XML), hardened, and identical to the copies in packaging/. Installing
writes the file and asks the manager to start it; where the manager cannot be reached the command says
what it wrote and what to run by hand."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.daemon.service import manager
from localllm.daemon.service.units import DEFAULT_EXECUTABLE, KINDS, ServiceSpec, render

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
THIS_INSTALL = ServiceSpec((str(Path(sys.executable).parent / "localllm"), "serve"), home="/srv/llm data")


@pytest.mark.parametrize(("kind", "copy"), [("systemd-system", "systemd/localllm.service"),
                                            ("systemd-user", "systemd/localllm-user.service"),
                                            ("launchd", "launchd/dev.localllm.serve.plist"),
                                            ("windows-task", "windows/localllm-task.xml")])
def test_the_packaging_copies_are_the_rendered_defaults(kind, copy):
    encoding = "utf-16" if kind == "windows-task" else "utf-8"
    assert (PACKAGING / copy).read_text(encoding=encoding) == render(kind, ServiceSpec((DEFAULT_EXECUTABLE, "serve")))


@pytest.mark.parametrize("kind", ["systemd-system", "systemd-user"])
def test_systemd_units_verify_and_are_hardened(kind, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian: apt-get install systemd; .ci/run installs it)")
    unit = tmp_path / "localllm.service"
    unit.write_text(render(kind, THIS_INSTALL))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = unit.read_text()
    assert f'ExecStart={THIS_INSTALL.command[0]} serve' in text
    assert "NoNewPrivileges=yes" in text and "UMask=0077" in text
    if kind == "systemd-system":
        for option in ("User=localllm", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                       "CapabilityBoundingSet=\n", "ReadWritePaths=/srv/llm data"):
            assert option in text, option


def test_launch_agent_is_a_valid_plist():
    agent = plistlib.loads(render("launchd", ServiceSpec(("/opt/localllm/bin/localllm", "serve"), home="/x",
                                                         log_file="/Users/a/Library/Logs/localllm.log")).encode())
    assert agent["ProgramArguments"] == ["/opt/localllm/bin/localllm", "serve"]
    assert agent["EnvironmentVariables"] == {"LOCALLLM_HOME": "/x"} and agent["Umask"] == 0o077
    assert agent["KeepAlive"] == {"SuccessfulExit": False} and agent["StandardErrorPath"].startswith("/Users/")


def test_windows_task_is_valid_task_scheduler_xml():
    spec = ServiceSpec((r"C:\Program Files\localllm\localllm.exe", "serve"))
    root = ET.fromstring(render("windows-task", spec).encode("utf-16"))
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    assert root.find("t:Actions/t:Exec/t:Command", ns).text == spec.command[0]
    assert root.find("t:Actions/t:Exec/t:Arguments", ns).text == "serve"
    assert root.find("t:Principals/t:Principal/t:RunLevel", ns).text == "LeastPrivilege"
    assert root.find("t:Triggers/t:LogonTrigger", ns) is not None


def test_render_command_prints_this_installations_file(localllm_home):
    result = CliRunner().invoke(cli, ["service", "render", "systemd-user"])
    assert result.exit_code == 0
    assert f"Environment=LOCALLLM_HOME={localllm_home}" in result.output
    assert "ExecStart=" in result.output and "serve" in result.output
    assert set(KINDS) == {"systemd-user", "systemd-system", "launchd", "windows-task"}


def test_user_install_writes_the_unit_and_says_what_to_run_when_systemd_is_out_of_reach(tmp_path):
    calls = []

    def no_user_bus(command):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "Failed to connect to bus: No medium found")

    with pytest.raises(manager.ServiceError) as refused:
        manager.install("systemd-user", THIS_INSTALL, home_dir=tmp_path, run=no_user_bus)
    unit = tmp_path / ".config" / "systemd" / "user" / "localllm.service"
    assert unit.read_text() == render("systemd-user", THIS_INSTALL)
    message = refused.value.message
    assert str(unit) in message and "Failed to connect to bus" in message
    assert "systemctl --user daemon-reload && systemctl --user enable --now localllm" in message
    assert calls == [["systemctl", "--user", "daemon-reload"]]


def test_user_install_status_and_uninstall_with_a_working_manager(tmp_path):
    calls = []

    def systemctl(command):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, "active\n", "")

    where = manager.install("systemd-user", THIS_INSTALL, home_dir=tmp_path, run=systemctl)
    assert calls == [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", "localllm"]]
    assert manager.status("systemd-user", home_dir=tmp_path, run=systemctl) == (where, True, "active")
    manager.uninstall("systemd-user", home_dir=tmp_path, run=systemctl)
    assert not where.path.exists()
    assert manager.status("systemd-user", home_dir=tmp_path, run=systemctl)[1:] == (False, "not installed")
    with pytest.raises(manager.ServiceError, match="No systemd-user service is installed"):
        manager.uninstall("systemd-user", home_dir=tmp_path, run=systemctl)


def test_a_system_service_refuses_an_executable_it_could_not_reach():
    if manager.os.geteuid() != 0:
        with pytest.raises(manager.ServiceError, match="sudo"):
            manager.install("systemd-system", THIS_INSTALL)
        return
    with pytest.raises(manager.ServiceError, match="ProtectHome"):
        manager.install("systemd-system", ServiceSpec(("/home/me/venv/bin/localllm", "serve")),
                        run=lambda command: subprocess.CompletedProcess(command, 0, "", ""))
