"""`--workers auto`: the CPUs this container may use, from fixture cgroup files."""

from __future__ import annotations

from pathlib import Path

import pytest

from infermeter.cpus import MAX_AUTO_WORKERS, cgroup_cpus, resolve_workers, usable_cpus


def _write(root: Path, path: str, text: str) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _v2(tmp_path: Path, cpu_max: str, cgroup: str = "/", parent: str | None = None) -> Path:
    _write(tmp_path, "proc/self/cgroup", f"0::{cgroup}\n")
    _write(tmp_path, f"sys/fs/cgroup{cgroup.rstrip('/')}/cpu.max", cpu_max + "\n")
    if parent is not None:
        _write(tmp_path, "sys/fs/cgroup/cpu.max", parent + "\n")
    return tmp_path


def test_v2_quota_in_a_container_namespace(tmp_path: Path) -> None:
    root = _v2(tmp_path, "200000 100000")
    assert cgroup_cpus(root) == 2.0
    assert usable_cpus(root, affinity=64) == 2


def test_v2_unlimited_falls_back_to_the_affinity_mask(tmp_path: Path) -> None:
    root = _v2(tmp_path, "max 100000")
    assert cgroup_cpus(root) is None
    assert usable_cpus(root, affinity=6) == 6


def test_v2_the_tightest_ancestor_wins(tmp_path: Path) -> None:
    root = _v2(tmp_path, "800000 100000", cgroup="/kubepods/pod1/c1", parent="300000 100000")
    assert cgroup_cpus(root) == 3.0


def test_fractional_quota_rounds_down_but_never_below_one(tmp_path: Path) -> None:
    assert usable_cpus(_v2(tmp_path / "a", "150000 100000"), affinity=8) == 1
    assert usable_cpus(_v2(tmp_path / "b", "50000 100000"), affinity=8) == 1
    assert usable_cpus(_v2(tmp_path / "c", "350000 100000"), affinity=8) == 3


def test_affinity_smaller_than_the_quota_wins(tmp_path: Path) -> None:
    assert usable_cpus(_v2(tmp_path, "800000 100000"), affinity=2) == 2


def test_v1_cfs_quota(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "400000\n")
    _write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpus(tmp_path) == 4.0
    assert usable_cpus(tmp_path, affinity=16) == 4


def test_v1_unlimited_quota_is_minus_one(tmp_path: Path) -> None:
    _write(tmp_path, "proc/self/cgroup", "1:cpu:/\n")
    _write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    _write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert cgroup_cpus(tmp_path) is None


def test_no_cgroup_files_at_all(tmp_path: Path) -> None:
    assert cgroup_cpus(tmp_path) is None
    assert usable_cpus(tmp_path, affinity=3) == 3


@pytest.mark.parametrize(("setting", "expected"), [(1, 1), (5, 5), ("auto", MAX_AUTO_WORKERS)])
def test_resolve_workers_caps_auto(tmp_path: Path, setting: int | str, expected: int) -> None:
    assert resolve_workers(setting, tmp_path, affinity=128) == expected


def test_this_machine_gives_a_sane_answer() -> None:
    assert 1 <= usable_cpus() <= 4096
