"""bench/guard_quality.py as a module, so tests score and read the dev data the way the benchmark does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "guard_quality.py"


def _load():
    if "guard_quality" in sys.modules:
        return sys.modules["guard_quality"]
    spec = importlib.util.spec_from_file_location("guard_quality", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["guard_quality"] = module
    spec.loader.exec_module(module)
    return module


guard_quality = _load()
