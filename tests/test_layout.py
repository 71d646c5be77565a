"""The layout's import rules, read from the source with `ast` (nothing is imported):

- src/infermeter is the runtime: it imports none of generate/, harness/, bench/, tests/;
- generate/ (build-time generators) imports only the runtime;
- harness/ (what tests, benchmarks and `make demo` share) imports neither tests nor bench;
- bench/ never imports tests;
- tests/ import bench only where a bench entry point is the thing under test;
- no test module (test_*.py, conftest.py) is imported as a library by anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"src/infermeter": "infermeter", "generate": "generate", "harness": "harness"}
TOP |= {"bench": "bench", "tests": "tests"}
FORBIDDEN = {
    "infermeter": {"generate", "harness", "bench", "tests"},
    "generate": {"harness", "bench", "tests"},
    "harness": {"bench", "tests"},
    "bench": {"tests"},
    "tests": set(),
}
#: tests whose subject is a bench entry point: the benchmarks' smoke run, the short soak,
#: the yardstick proxy
BENCH_UNDER_TEST = {
    "tests/test_bench_smoke.py",
    "tests/e2e/test_soak_short.py",
    "tests/test_bench_floor.py",
    "tests/test_bench_tree.py",
    "tests/test_bench_cpu_split.py",
}


def sources() -> list[tuple[str, Path]]:
    return [
        (package, path)
        for folder, package in TOP.items()
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT / "src" if path.is_relative_to(ROOT / "src") else ROOT)
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module the file imports (absolute names; `from a import b` gives a and a.b)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return name.split(".")[0] == "tests" and (last.startswith("test_") or last == "conftest")


SOURCES = sources()


def test_the_tree_is_read() -> None:
    names = {module_name(path) for _, path in SOURCES}
    for expected in ("infermeter.cli", "generate.files", "harness.sidecar", "bench.run"):
        assert expected in names
    assert "tests.test_layout" in names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_rules(package: str) -> None:
    broken = []
    for owner, path in SOURCES:
        if owner != package:
            continue
        where = path.relative_to(ROOT).as_posix()
        for name in sorted(imported(path)):
            top = name.split(".")[0]
            if top in FORBIDDEN[package]:
                broken.append(f"{where} imports {name}")
            elif is_test_module(name):
                broken.append(f"{where} imports the test module {name}")
            elif package == "tests" and top == "bench" and where not in BENCH_UNDER_TEST:
                broken.append(f"{where} imports {name}: move what it shares into harness/")
    assert not broken, "\n".join(broken)


def test_the_wheel_holds_only_the_runtime() -> None:
    from setuptools import find_packages  # here: importing setuptools costs every collection

    packages = find_packages(where=str(ROOT / "src"))
    assert packages
    assert all(name == "infermeter" or name.startswith("infermeter.") for name in packages)
    runtime = {module_name(path) for owner, path in SOURCES if owner == "infermeter"}
    heavy = {"matplotlib", "generate"}
    for owner, path in SOURCES:
        if owner == "infermeter":
            assert not {n.split(".")[0] for n in imported(path)} & heavy, path
    assert "infermeter.dashboards" not in runtime
    assert "infermeter.reference" not in runtime
