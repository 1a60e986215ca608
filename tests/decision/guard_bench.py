"""bench/guard_quality.py as a module, so tests score the way the benchmark does, on the
sample of labelled records shipped in tests/data/pii (the benchmark reads the whole dev file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[2] / "bench" / "guard_quality.py"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "pii" / "presidio_sample.json"


def _load():
    if "guard_quality" in sys.modules:
        return sys.modules["guard_quality"]
    spec = importlib.util.spec_from_file_location("guard_quality", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["guard_quality"] = module
    spec.loader.exec_module(module)
    return module


guard_quality = _load()


def sample_records():
    """The 400 labelled records in tests/data/pii (every record of the rarer types, the rest at random)."""
    return guard_quality.load_records(SAMPLE)
