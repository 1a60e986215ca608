"""Load the guard without PyTorch and Hugging Face transformers, which it never uses.

The guard's libraries reach for both when they are installed (with localllm's ``torch`` extra):
presidio_analyzer imports ``transformers`` for an NLP engine the guard does not use, and thinc
imports ``torch`` for GPU and PyTorch-wrapped layers spaCy's small CPU model does not have. Both
treat them as optional and carry on without them. Refusing the two imports while the guard loads
cut its start from 9.3 s to 3.6 s and the process from 590 to 276 MB (BENCHMARKS.md).

The refusal holds only on the thread that loads the guard and only while it does, so another
thread (or later code, such as the sentence-transformers embedder) imports them as usual.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

FRAMEWORKS_THE_GUARD_DOES_NOT_USE = frozenset({"torch", "transformers"})


class _RefuseOnOneThread(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str], thread_id: int):
        self.names = names
        self.thread_id = thread_id

    def find_spec(self, fullname, path, target=None):
        if threading.get_ident() == self.thread_id and fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not loaded for the guard)", name=fullname)
        return None  # not ours to decide: the next finder looks


@contextmanager
def refusing_imports(names: Iterable[str] = FRAMEWORKS_THE_GUARD_DOES_NOT_USE) -> Iterator[None]:
    """Within the block, on this thread, importing one of ``names`` (or a submodule) raises
    ModuleNotFoundError unless it is imported already."""
    finder = _RefuseOnOneThread(frozenset(names), threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
