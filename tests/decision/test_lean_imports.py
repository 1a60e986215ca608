"""The guard loads without PyTorch and transformers, and refuses them only to its own loading thread."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import threading

import pytest

from localllm.decision.guard.lean_imports import refusing_imports


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
                    reason="needs the torch extra installed: without it there is nothing to keep out")
def test_loading_the_guard_leaves_torch_and_transformers_unloaded_and_it_still_finds_things():
    script = (
        "import sys\n"
        "from localllm.config import Settings\n"
        "from localllm.daemon.pipeline.services import load_scanner\n"
        "scanner = load_scanner(Settings())\n"
        "spans = scanner.detector.scan('Angela Merkel flew to Berlin with card 4111 1111 1111 1111.')\n"
        "print(sorted({s.entity_type for s in spans}))\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
        "import torch, transformers\n"  # still importable afterwards, for whoever needs them
        "print('imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    found, loaded, imported = out.stdout.strip().splitlines()[-3:]
    assert found == "['CREDIT_CARD', 'LOCATION', 'PERSON']"
    assert loaded == "False False"
    assert imported == "imported"


def test_the_refusal_holds_only_on_the_loading_thread_and_only_inside_the_block():
    name = "colorsys"  # a small stdlib module nothing here imports
    sys.modules.pop(name, None)
    other_thread: list[object] = []
    with refusing_imports({name}):
        with pytest.raises(ModuleNotFoundError, match="not loaded for the guard"):
            importlib.import_module(name)
        thread = threading.Thread(target=lambda: other_thread.append(importlib.import_module(name)))
        thread.start()
        thread.join()
    assert other_thread and other_thread[0].__name__ == name
    sys.modules.pop(name, None)
    assert importlib.import_module(name).__name__ == name
