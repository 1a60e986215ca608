"""Imports flow one way: the package root <- store, fallback, decision <- daemon <- cli.

Walks every module's imports (lazy ones inside functions too) with ``ast`` and fails on any
cycle between localllm's first-level parts, between the daemon's subpackages, or on an
import of any part from the package root.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Folder -> the package it installs as (pyproject.toml's package-dir).
PART_DIRS = {"localllm": "localllm", "daemon": "localllm.daemon", "decision": "localllm.decision",
             "fallback": "localllm.fallback", "store": "localllm.store", "cli": "localllm.cli"}
PARTS = ("daemon", "decision", "fallback", "store", "cli")


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    if rest and rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join([PART_DIRS[folder], *rest])


def imported_modules(path: Path) -> set[str]:
    """Every localllm module ``path`` imports, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return {m for m in found if m == "localllm" or m.startswith("localllm.")}


def part_of(module: str, depth: int = 1) -> str:
    """The first-level part (``daemon``, ...; ``localllm`` for the package root's own modules), or with
    ``depth`` 2 the subpackage inside a part (``daemon.http``)."""
    pieces = module.split(".")[1:]
    if not pieces or pieces[0] not in PARTS:
        return "localllm"
    return ".".join(pieces[:depth])


def import_graph(depth: int = 1, only: str | None = None) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for folder in PART_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            source = part_of(module_name(path), depth)
            if only is not None and not source.startswith(only + "."):
                continue
            for target in imported_modules(path):
                destination = part_of(target, depth)
                if destination != source and (only is None or destination.startswith(only + ".")):
                    graph[source].add(destination)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of nodes (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert part_of("localllm.config.engine") == "localllm"
    assert part_of("localllm.daemon.http.app", 2) == "daemon.http"


def test_no_cycle_between_first_level_parts():
    graph = import_graph()
    assert set(graph) >= {"daemon", "decision", "fallback", "store", "cli"}  # the walk saw every part
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_package_root_imports_no_part():
    assert import_graph().get("localllm", set()) == set()


def test_parts_import_in_the_documented_direction():
    graph = import_graph()
    assert graph["cli"] >= {"daemon"}
    for lower in ("store", "fallback", "decision"):
        assert not graph[lower] & {"daemon", "cli"}, lower
    assert "daemon" not in graph["fallback"] and "decision" not in graph["fallback"]


def test_no_cycle_between_the_daemons_subpackages():
    graph = import_graph(depth=2, only="daemon")
    assert {"daemon.http", "daemon.pipeline", "daemon.engine", "daemon.models"} <= set(graph) | {
        target for targets in graph.values() for target in targets}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
