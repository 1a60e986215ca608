"""The container recipe, read as Docker would read it (no engine runs here to build it): two stages, the
compiler only in the first, every package folder copied in, the runtime stage as a non-root user with a
health check on readiness, state in a volume, and only the daemon's own wheels installed."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "packaging" / "container" / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined, current = [], ""
    for line in RECIPE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return [(text.split(" ", 1)[0].upper(), text.split(" ", 1)[1] if " " in text else "") for text in joined]


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


def test_two_stages_and_the_compiler_stays_in_the_first():
    build, runtime = stages()
    assert "build-essential" in " ".join(args for _, args in build)
    assert "build-essential" not in " ".join(args for _, args in runtime)
    assert any(kind == "COPY" and "--from=build" in args for kind, args in runtime)


def test_every_package_folder_is_copied_into_the_build():
    package_dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    copied = {args.split()[0] for kind, args in stages()[0] if kind == "COPY"}
    assert set(package_dirs.values()) <= copied, set(package_dirs.values()) - copied
    assert {"pyproject.toml"} <= {part for args in copied for part in args.split()}


def test_the_runtime_stage_runs_unprivileged_with_a_health_check_and_a_volume():
    runtime = dict(reversed(stages()[1]))  # the first of each instruction
    user = [args for kind, args in stages()[1] if kind == "USER"][-1]
    assert user not in ("root", "0")
    assert "/health" in runtime["HEALTHCHECK"] and "--start-period" in runtime["HEALTHCHECK"]
    assert "/data" in runtime["VOLUME"] and runtime["EXPOSE"] == "8765"
    assert "LOCALLLM_HOME=/data" in runtime["ENV"] and "localllm" in runtime["CMD"] and "serve" in runtime["CMD"]
    installs = [args for kind, args in stages()[1] if kind == "RUN" and "pip install" in args]
    assert installs and all("--no-index" in args and "[" not in args for args in installs)
