from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

#: Modules (or single tests, every case of a parametrized one) that take the longest, started
#: first so that the parallel run does not end waiting on one of them (xdist hands out tests
#: in collection order). Seconds alone on the 2-core machine (#19), longest first.
FIRST = (
    "tests/test_bench_smoke.py",  # ~38: one bench run, module-scoped
    "tests/dashboards/test_live.py",  # ~37: a live stack and a 20 s workload, module-scoped
    "tests/rules/test_alert_e2e.py",  # ~36: Prometheus, Alertmanager, a baseline to build
    "tests/e2e/test_soak_short.py",  # ~19
    "tests/test_dockerfile.py",  # ~17: pip wheel + install in fresh venvs
    "tests/e2e/test_hostile.py::test_smuggling_attempts_and_ambiguous_hosts_are_refused",
    "tests/rules/test_engine_alert_e2e.py",  # ~14
    "tests/test_demo.py",  # ~11: the demo's GPUs and traffic
    "tests/rules/test_rules.py::test_promtool_unit_tests",  # ~8 for latency_test.yaml
    # ~4, asleep: waits out the upstream pool's keep-alive
    "tests/test_upstream_client.py::test_idle_connections_are_closed_before_the_upstream_would",
)


#: xdist workers per usable CPU, for `-n auto` (pyproject's addopts). Much of the suite waits
#: on real processes (Prometheus evaluating, Alertmanager grouping, timeouts running out), so
#: 3 per core keeps the cores busy: on the 2-vCPU machine (#19) 3 workers took 4 min, 5 about
#: 3, 6 (once the controller warms the byte-code caches for all) 2 min 41 s - 2 min 56 s.
#: Capped: each worker pays its collection (~3 CPU-s), and more contention.
WORKERS_PER_CPU, MAX_WORKERS = 3, 12


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """The CPUs this machine or container may use (cgroup quota and affinity, as
    `--workers auto` counts them) times WORKERS_PER_CPU."""
    from infermeter.cpus import usable_cpus

    return max(2, min(MAX_WORKERS, round(usable_cpus() * WORKERS_PER_CPU)))


@pytest.hookimpl(tryfirst=True)  # before xdist's own (trylast) starts the workers
def pytest_sessionstart(session: pytest.Session) -> None:
    """The controller of a parallel run writes the byte-code caches once, so that its
    workers do not each compile and rewrite the same modules (harness/prewarm.py)."""
    config = session.config
    if "PYTEST_XDIST_WORKER" in os.environ or not config.pluginmanager.has_plugin("dsession"):
        return
    if sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE: no cache files wanted here
        return
    from harness.prewarm import prewarm
    from infermeter.cpus import usable_cpus

    root = Path(__file__).parents[1]
    packages = [root / "src" / "infermeter", root / "harness", root / "bench", root / "generate"]
    prewarm(root / "tests", packages, usable_cpus())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files instead of comparing"
    )


def _groups_file(config: pytest.Config, worker: str) -> Path:
    """Where a worker leaves its tests' xdist groups for the controller: the run's base
    temporary directory (each worker's own is a subdirectory of it)."""
    factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
    base = factory.getbasetemp()
    return (base.parent if worker else base) / f"xdist-groups-{worker or 'gw0'}.json"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group what must share a worker, start the slowest tests first, `serial` ones last.

    - `serial` tests form one group (one worker, one after another);
    - a test using a module- or class-scoped fixture joins its module's group, so the
      fixture (a sidecar, a Prometheus, a bench run) is set up once, on one worker;
    - an explicit `xdist_group` mark names its group."""
    groups: dict[str, str] = {}
    for item in items:
        explicit = item.get_closest_marker("xdist_group")
        if item.get_closest_marker("serial"):
            groups[item.nodeid] = "serial"
        elif explicit is not None:
            groups[item.nodeid] = str(
                explicit.args[0] if explicit.args else explicit.kwargs["name"]
            )
        elif any(
            definition.scope in ("module", "class")
            for definitions in item._fixtureinfo.name2fixturedefs.values()
            for definition in definitions
        ):
            groups[item.nodeid] = item.nodeid.split("::")[0]

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("serial"):
            # last: it runs once the others have drained, on a machine idle by then, instead
            # of stopping every worker mid-run until whatever they started (up to a 40 s
            # bench run) has finished
            return len(FIRST) + 1
        for index, prefix in enumerate(FIRST):
            if item.nodeid == prefix or item.nodeid.startswith((prefix + "::", prefix + "[")):
                return index
        return len(FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker:
        _groups_file(config, worker).write_text(json.dumps(groups))


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: pytest -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` with the groups above. xdist's own loadgroup tags node ids with
    the group, which pytest 9.2 no longer lets a plugin do (nodeid is derived from the
    node's structured id): here the controller reads the groups the workers wrote, and
    falls back on xdist's tags where a pytest still has them."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class GroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected by now
                written = sorted(_groups_file(config, "").parent.glob("xdist-groups-*.json"))
                self.groups = json.loads(written[0].read_text()) if written else {}
            return self.groups.get(nodeid) or str(super()._split_scope(nodeid))

    return GroupScheduling(config, log)


class _SerialLock:
    """A readers-writer lock between xdist workers (flock on files every worker shares):
    each test holds it shared, a `serial` test exclusively while its test function runs
    (its fixtures start processes while the others carry on). The turnstile gives a
    waiting writer priority, so a serial test is not starved by the stream of other tests."""

    def __init__(self, directory: Path) -> None:
        self.turnstile: IO[bytes] = (directory / "serial.turnstile").open("ab")
        self.main: IO[bytes] = (directory / "serial.lock").open("ab")

    @contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.main, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.main, fcntl.LOCK_UN)

    @contextmanager
    def alone(self) -> Iterator[None]:
        """From shared (`hold`) to exclusive for the block, then shared again."""
        fcntl.flock(self.main, fcntl.LOCK_UN)
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.main, fcntl.LOCK_EX)
        finally:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.main, fcntl.LOCK_SH)  # converts: others may start again

    def close(self) -> None:
        self.turnstile.close()
        self.main.close()


_lock: _SerialLock | None = None


def pytest_unconfigure(config: pytest.Config) -> None:
    global _lock
    if _lock is not None:  # closed here, not left to the interpreter's exit (ResourceWarning)
        _lock.close()
        _lock = None


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout: waiting is not the test
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _lock
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return (yield)
    if _lock is None:
        factory: pytest.TempPathFactory = item.config._tmp_path_factory  # type: ignore[attr-defined]
        _lock = _SerialLock(factory.getbasetemp().parent)  # shared by this run's workers
    with _lock.hold(exclusive=False):
        return (yield)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A `serial` test's function runs alone (its fixtures did not need to)."""
    if _lock is None or item.get_closest_marker("serial") is None:
        return (yield)
    with _lock.alone():
        return (yield)


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
