"""Byte-code caches written once, before pytest-xdist starts its workers.

In a fresh clone no `__pycache__` exists: every xdist worker would compile the same modules
and rewrite the asserts of the same test modules (pytest's AST pass, ~2 CPU-s for this
suite), five workers doing five times the same work while they compete for two cores (#19).
Here the controller does it once, in a process per CPU, and writes what the workers then
find: plain pycs through `compileall`, and pytest's own rewritten pycs through its own
functions. pytest checks every cached pyc against its source's hash, so a stale or foreign
file is only ever a cache miss; and since the rewriting functions are pytest's private API,
anything unexpected from them makes this a no-op rather than an error.
"""

from __future__ import annotations

import compileall
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any


def rewritten_modules(tests: Path) -> list[Path]:
    """The files pytest rewrites under `tests`: test modules and conftests (pytest's
    default `python_files`, which pyproject keeps)."""
    return sorted(
        path
        for path in tests.rglob("*.py")
        if path.name == "conftest.py" or path.name.startswith("test_")
    )


def _rewriter() -> Callable[[Path], bool] | None:
    """pytest's own rewrite-and-cache step for one file, or None if this pytest's private
    API is not the one this was written against."""
    try:
        from _pytest.assertion import rewrite
    except ImportError:
        return None
    needed = ("_read_pyc", "_rewrite_test", "_write_pyc_fp", "get_cache_dir", "try_makedirs")
    if not all(hasattr(rewrite, name) for name in (*needed, "PYC_TAIL")):
        return None

    def rewrite_one(path: Path) -> bool:
        cache = rewrite.get_cache_dir(path)
        pyc = cache / (path.name[:-3] + rewrite.PYC_TAIL)
        if rewrite._read_pyc(path, pyc) is not None:
            return True  # already there and current
        if not rewrite.try_makedirs(cache):
            return False
        # no config: it only says whether to call pytest_assertion_pass hooks, which this
        # suite neither enables nor implements (pyproject's enable_assertion_pass_hook)
        source_hash, code = rewrite._rewrite_test(path, None)  # type: ignore[arg-type]
        partial = Path(f"{pyc}.{os.getpid()}")
        with partial.open("wb") as out:  # then renamed: a reader never sees half a file
            rewrite._write_pyc_fp(out, source_hash, code)
        partial.replace(pyc)
        return True

    return rewrite_one


def _work(job: tuple[str, str]) -> bool:
    kind, path = job
    if kind == "compile":
        return bool(compileall.compile_dir(path, quiet=2))
    rewrite_one = _rewriter()
    return rewrite_one is not None and rewrite_one(Path(path))


def prewarm(tests: Path, packages: Iterable[Path], processes: int, start: str = "fork") -> int:
    """Rewrite `tests`' modules and compile `packages` in `processes` processes; the number
    of jobs done. Never raises: a failure leaves the work to the workers. `start`: fork
    (pytest's controller, no thread yet: the children start in ms with all they need
    imported) or spawn (from a process that has threads)."""
    if _rewriter() is None:
        return 0
    jobs = [("compile", str(p)) for p in packages] + [
        ("rewrite", str(p)) for p in rewritten_modules(tests)
    ]
    try:
        with ProcessPoolExecutor(max(1, processes), mp_context=get_context(start)) as pool:
            done: list[Any] = list(pool.map(_work, jobs, chunksize=4))
    except Exception:  # noqa: BLE001 - an optimisation only
        return 0
    return sum(1 for ok in done if ok)
