"""usearch before onnxruntime must not crash the process (it did: a segfault)."""

import subprocess
import sys


def test_cache_index_then_onnx_embedder_in_one_process():
    code = ("from localllm.store.cache_index import _usearch_index; _usearch_index(); "
            "from localllm.store.embedder import load_embedder; load_embedder('onnx').embed(['ok'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
