"""CPU and memory of a process with its descendants: the sidecar is a supervisor and its
proxy workers, nginx a master and its worker."""

from __future__ import annotations

import time

import psutil

#: Linux's CPUCLOCK_SCHED: a process CPU clock counting on-CPU time, user and system, of
#: all its threads (those that exited too), in nanoseconds.
_CPUCLOCK_SCHED = 2


def processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def process_cpu(pid: int) -> float | None:
    """CPU seconds of a live process to the nanosecond, or None once it is gone.

    /proc (psutil's `cpu_times`) counts in 10 ms ticks: over a benchmark round of a few
    hundred events that is 15 µs per event, the size of the effects being measured. This
    reads the process's own CPU clock instead: the clock id `clock_getcpuclockid(3)` makes
    on Linux, `(~pid << 3) | CPUCLOCK_SCHED`, which `clock_gettime` takes for another
    process too."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | _CPUCLOCK_SCHED) / 1e9
    except OSError:
        return None


def tree_cpu(pid: int) -> float:
    """User + system seconds of the process and its live descendants (the process's reaped
    children too, in /proc's ticks: there is no finer record of them)."""
    total = 0.0
    for proc in processes(pid):
        try:
            own = process_cpu(proc.pid)
            if own is None:
                continue
            total += own
            if proc.pid == pid:
                times = proc.cpu_times()
                total += times.children_user + times.children_system
        except psutil.NoSuchProcess:
            continue
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for proc in processes(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total
