"""How many CPUs this container may actually use: `--workers auto`.

os.cpu_count() is the host's core count; a pod limited to 2 CPUs on a 64-core node must
not start 64 workers. The answer is the smaller of the affinity mask (cpusets, `taskset`)
and the CFS quota of the process's cgroup (v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
`cpu.cfs_period_us`, the tightest of the cgroup and its ancestors), rounded down, at least
one. Pure over a root directory, so fixtures stand in for /proc and /sys.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: `auto` never starts more workers than this: past it, one supervisor merging and
#: rendering for all of them becomes the limit (see the README's CPU guidance).
MAX_AUTO_WORKERS = 16


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _ancestry(base: Path, cgroup: str) -> list[Path]:
    """The cgroup's directory and each ancestor's, deepest first, that exist under base."""
    parts = [p for p in cgroup.strip("/").split("/") if p]
    dirs = [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v2_quota(base: Path, cgroup: str) -> float | None:
    best: float | None = None
    for directory in _ancestry(base, cgroup):
        text = _read(directory / "cpu.max")
        if not text:
            continue
        quota, _, period = text.partition(" ")
        if quota == "max" or not period:
            continue
        cpus = int(quota) / int(period)
        best = cpus if best is None else min(best, cpus)
    return best


def _v1_quota(base: Path, cgroup: str) -> float | None:
    best: float | None = None
    for directory in _ancestry(base, cgroup):
        quota, period = (
            _read(directory / "cpu.cfs_quota_us"),
            _read(directory / "cpu.cfs_period_us"),
        )
        if not quota or not period or int(quota) <= 0 or int(period) <= 0:
            continue
        cpus = int(quota) / int(period)
        best = cpus if best is None else min(best, cpus)
    return best


def cgroup_cpus(root: Path = Path("/")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs; None when there is none."""
    listing = _read(root / "proc/self/cgroup")
    if listing is None:
        return None
    found: float | None = None
    for line in listing.splitlines():
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if ident == "0" and controllers == "":
            quota = _v2_quota(root / "sys/fs/cgroup", path)
        elif "cpu" in controllers.split(","):
            mount = root / "sys/fs/cgroup" / controllers
            if not mount.is_dir():
                mount = root / "sys/fs/cgroup/cpu"
            quota = _v1_quota(mount, path)
        else:
            continue
        if quota is not None:
            found = quota if found is None else min(found, quota)
    return found


def usable_cpus(root: Path = Path("/"), affinity: int | None = None) -> int:
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    quota = cgroup_cpus(root)
    limit = affinity if quota is None else min(affinity, max(1, math.floor(quota)))
    return max(1, limit)


def resolve_workers(setting: int | str, root: Path = Path("/"), affinity: int | None = None) -> int:
    """The number of proxy workers for the `workers` setting."""
    if setting == "auto":
        return min(MAX_AUTO_WORKERS, usable_cpus(root, affinity))
    return int(setting)
