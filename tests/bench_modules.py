"""The benchmark's scripts as modules, for in-process tests of their parts.

``bench/`` is not a package: its scripts import each other by name (``import run``),
so the folder goes on ``sys.path`` while one is loaded and used, and every module of
``bench/`` it brought in leaves ``sys.modules`` afterwards (a later test must not see
this one's).  Libraries it imported stay: numpy, for one, must not be imported twice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


@contextlib.contextmanager
def bench_module(filename: str, name: str) -> Iterator[ModuleType]:
    """``bench/filename`` loaded as module ``name`` (not the file's own name where that
    is a standard library module's, as ``profile`` is)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / filename)
        assert spec is not None and spec.loader is not None, filename
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop(name, None)
        for other, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None) or ""
            if Path(origin).parent == BENCH:
                sys.modules.pop(other, None)
