"""The controller's byte-code warm-up writes exactly what pytest's workers would, and reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from _pytest.assertion.rewrite import PYC_TAIL, _read_pyc

from harness.prewarm import prewarm, rewritten_modules

TEST = "def test_it():\n    x = 1\n    assert x == 2\n"


def test_rewritten_pycs_are_the_ones_pytest_reads(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "sub").mkdir(parents=True)
    (tests / "test_a.py").write_text(TEST)
    (tests / "sub" / "conftest.py").write_text("X = 1\n")
    (tests / "helper.py").write_text("Y = 1\n")  # not a test module: pytest does not rewrite it
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("Z = 1\n")

    assert [p.name for p in rewritten_modules(tests)] == ["conftest.py", "test_a.py"]
    # spawn: an xdist worker has threads, which fork would copy in whatever state they are
    assert prewarm(tests, [package], processes=2, start="spawn") == 3

    source = tests / "test_a.py"
    code = _read_pyc(source, tests / "__pycache__" / ("test_a" + PYC_TAIL))
    assert code is not None  # valid for this source, as pytest checks it
    namespace: dict[str, object] = {}
    exec(code, namespace)
    with pytest.raises(AssertionError, match="assert 1 == 2"):  # rewritten: it explains
        namespace["test_it"]()  # type: ignore[operator]
    assert (tests / "sub" / "__pycache__" / ("conftest" + PYC_TAIL)).exists()
    assert not list(tests.glob("__pycache__/helper*"))
    assert Path(importlib.util.cache_from_source(str(package / "mod.py"))).exists()

    source.write_text(TEST.replace("2", "3"))  # edited after: the cache is stale, not used
    assert _read_pyc(source, tests / "__pycache__" / ("test_a" + PYC_TAIL)) is None
