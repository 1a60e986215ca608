"""Both embedding backends: same model, normalised vectors, truncation, memoised by text."""

from __future__ import annotations

import numpy as np
import pytest

from localllm.store.embedder import MAX_TOKENS, MemoizedEmbedder, OnnxEmbedder, load_embedder


@pytest.fixture(scope="module")
def onnx(shared_embedder):
    assert shared_embedder.name == "all-MiniLM-L6-v2-onnx-int8"  # the default backend
    return shared_embedder


def test_sentence_transformers_and_onnx_backends_agree(onnx):
    texts = ["How do I bake bread?", "Recipe for a simple loaf", "Quarterly tax filing deadlines"]
    a, b = load_embedder("sentence-transformers").embed(texts), onnx.embed(texts)
    assert a.shape == b.shape == (3, 384) and a.dtype == b.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.99  # int8 ONNX export of the same model
    assert a[0] @ a[1] > a[0] @ a[2]


def test_long_input_is_truncated_to_the_model_window(onnx):
    long = "word " * 5000
    assert onnx.count_tokens([long]) == MAX_TOKENS
    assert onnx.embed([long]).shape == (1, 384)


def test_memoised_embedder_computes_each_text_once(onnx):
    calls = []

    class Counting:
        name, dimensions = onnx.name, onnx.dimensions

        def embed(self, texts, *, cores_busy=False):
            calls.append(list(texts))
            return onnx.embed(texts, cores_busy=cores_busy)

        def count_tokens(self, texts):
            return onnx.count_tokens(texts)

    memo = MemoizedEmbedder(Counting(), max_entries=2)
    first = memo.embed(["a", "b"])
    again = memo.embed(["b", "a"])
    assert calls == [["a", "b"]]
    assert np.array_equal(first[0], again[1])
    memo.embed(["c"])  # evicts "b", the least recently used ("a" was asked for last)
    memo.embed(["a"])
    assert calls[-1] == ["c"]
    memo.embed(["b"])
    assert calls[-1] == ["b"]


def test_unknown_backend_is_a_config_error():
    from localllm.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown embedder"):
        load_embedder("word2vec")


def test_automatic_embedder_threads_give_the_same_vectors():
    from localllm.config import physical_cores

    automatic, single = OnnxEmbedder(), OnnxEmbedder(threads=1)
    texts = ["How do I reset the pressure valve?", "Quarterly tax filing deadlines"]
    idle, busy = automatic.embed(texts), automatic.embed(texts, cores_busy=True)
    assert np.allclose(idle, busy, atol=1e-5) and np.allclose(busy, single.embed(texts), atol=1e-5)
    assert automatic.threads == physical_cores() and single.threads == 1
    assert automatic._busy_session.get_session_options().intra_op_num_threads == 1
    assert automatic._session.get_session_options().intra_op_num_threads == physical_cores()


async def test_embedder_threads_setting_reaches_the_embedder():
    from localllm.config import load_settings
    from localllm.daemon.pipeline.services import load_embedder_for
    from localllm.errors import ConfigError

    fixed = await load_embedder_for(load_settings(environ={"LOCALLLM_CACHE_EMBEDDER_THREADS": "1"}).settings)
    assert fixed.inner.threads == 1 and fixed.inner._busy_session is fixed.inner._session
    automatic = await load_embedder_for(load_settings(environ={}).settings)
    assert automatic.inner._busy_session is not automatic.inner._session or automatic.inner.threads == 1
    with pytest.raises(ConfigError, match="cache.embedder_threads"):
        load_settings(environ={"LOCALLLM_CACHE_EMBEDDER_THREADS": "-1"})
