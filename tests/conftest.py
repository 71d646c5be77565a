from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files instead of comparing"
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(scope="session")
def fake_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the compiled fake libnvidia-ml.so.1 (current driver API)."""
    from harness.fake_nvml.build import build

    out = tmp_path_factory.mktemp("fake-nvml")
    build(out)
    return out


@pytest.fixture(scope="session")
def old_driver_nvml_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.fake_nvml.build import build

    out = tmp_path_factory.mktemp("fake-nvml-old")
    build(out, variant="old-driver")
    return out


@pytest.fixture(params=["1", "2"], ids=["workers1", "workers2"])
def workers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test against `--workers 1` and `--workers 2` (every sidecar it starts);
    use with `pytest.mark.usefixtures("workers")` on a module."""
    from harness import sidecar

    monkeypatch.setitem(sidecar.SIDECAR_ENV, "INFERMETER_WORKERS", request.param)
    return str(request.param)
