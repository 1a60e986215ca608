"""`localllm cache stats|clear|export` on a real database filled through the cache's own write path."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from localllm.cli.main import cli
from localllm.config import CacheSettings
from localllm.store.cache_verifier import DuplicateVerifier
from localllm.store.database import database_path
from localllm.store.semantic_cache import SemanticCache
from localllm.store.writer import StoreWriter


async def fill(entries):
    writer = StoreWriter(database_path())
    writer.start()
    cache = SemanticCache(database_path(), writer, DuplicateVerifier.load_default(), CacheSettings(), 384)
    await cache.open()
    rng = np.random.default_rng(0)
    for namespace, model, question in entries:
        vector = rng.normal(size=384).astype(np.float32)
        vector /= np.linalg.norm(vector)
        await cache.store(namespace, "scope", question, vector, model, f"answer to {question}", "stop",
                          {"prompt_tokens": 5, "completion_tokens": 3})
    await cache.close()
    writer.stop()


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_cache_cli_before_anything_was_cached():
    result = run("cache", "stats")
    assert result.exit_code == 1
    assert "nothing has been cached" in result.output


async def test_stats_export_and_clear(localllm_home):
    await fill([("a", "m1", "q1"), ("a", "m2", "q2"), ("b", "m1", "q3")])
    stats = json.loads(run("cache", "stats", "--json").output)
    assert {(r["namespace"], r["model"], r["entries"]) for r in stats} == {("a", "m1", 1), ("a", "m2", 1),
                                                                           ("b", "m1", 1)}
    exported = [json.loads(line) for line in run("cache", "export", "--namespace", "a").output.splitlines()]
    assert [e["question"] for e in exported] == ["q1", "q2"]
    assert exported[0]["answer"]["text"] == "answer to q1"
    assert "embedding" not in exported[0]

    cleared = run("cache", "clear", "--namespace", "a", "--model", "m1")
    assert cleared.exit_code == 0 and "Removed 1" in cleared.output
    assert run("cache", "clear", "--namespace", "b").output.startswith("Removed 1")
    remaining = json.loads(run("cache", "stats", "--json").output)
    assert [(r["namespace"], r["model"]) for r in remaining] == [("a", "m2")]
    assert "Removed 1" in run("cache", "clear").output
    assert "empty" in run("cache", "stats").output
