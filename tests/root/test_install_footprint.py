"""`make run` installs only what the daemon's default path needs: the base requirements reach
neither PyTorch nor the test tools (those come with the `torch` and `test` extras, for `make test`)."""

from __future__ import annotations

import importlib.metadata as metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEAVY_OR_DEV = {"torch", "sentence-transformers", "transformers", "pytest", "openai", "anthropic"}


def requirement_closure(distribution: str) -> set[str]:
    """Names of every distribution the base install of ``distribution`` pulls in (no extras)."""
    seen: set[str] = set()
    pending = [(distribution, frozenset())]
    while pending:
        name, extras = pending.pop()
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: it cannot be walked further, and it is named already
        for line in requires:
            requirement = Requirement(line)
            wanted = requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in (extras or {""}))
            key = canonicalize_name(requirement.name)
            if wanted and key not in seen:
                seen.add(key)
                pending.append((requirement.name, frozenset(requirement.extras)))
    return seen


def test_the_base_install_pulls_in_no_pytorch_and_no_test_tools():
    closure = requirement_closure("localllm")
    assert {"llama-cpp-python", "onnxruntime", "aiohttp", "spacy"} <= closure  # the walk reached the real deps
    assert not closure & HEAVY_OR_DEV, sorted(closure & HEAVY_OR_DEV)


def test_the_extras_are_where_pytorch_and_the_test_tools_come_from():
    requires = [Requirement(line) for line in metadata.requires("localllm")]
    by_extra = {}
    for requirement in requires:
        for extra in ("torch", "test"):
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                by_extra.setdefault(extra, set()).add(canonicalize_name(requirement.name))
    assert "sentence-transformers" in by_extra["torch"]
    assert {"pytest", "openai", "anthropic"} <= by_extra["test"]
