"""CPU and memory of a process with its descendants: the sidecar is a supervisor and its
proxy workers, nginx a master and its worker."""

from __future__ import annotations

import psutil


def processes(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu(pid: int) -> float:
    """User + system seconds of the process and its live descendants (and reaped children)."""
    total = 0.0
    for proc in processes(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if proc.pid == pid:
            total += times.children_user + times.children_system
    return total


def tree_rss(pid: int) -> int:
    total = 0
    for proc in processes(pid):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total
