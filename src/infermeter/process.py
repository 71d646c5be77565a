"""Process figures from psutil: the sidecar itself and, optionally, the inference server.

The server's figures cover its whole process tree (vLLM and SGLang run their engines in
child processes), which is what an SRE sizing the pod wants to see.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil
from prometheus_client.metrics_core import Metric

from infermeter import metrics as m

log = logging.getLogger(__name__)
SEARCH_INTERVAL = 10.0  # seconds between searches for a server process that is not running
TREE_INTERVAL = 10.0  # seconds between refreshes of the server's list of descendants


@dataclass(frozen=True, slots=True)
class TreeFigures:
    cpu_seconds: float
    rss_bytes: float
    threads: float
    fds: float


def tree_figures(root: psutil.Process, descendants: list[psutil.Process]) -> TreeFigures:
    """Sum over the process and its live descendants, plus the CPU of reaped children."""
    cpu = rss = threads = fds = 0.0
    with root.oneshot():
        times = root.cpu_times()
        cpu += times.children_user + times.children_system
    for proc in [root, *descendants]:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
                threads += proc.num_threads()
                fds += proc.num_fds()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if proc is root:
                raise
    return TreeFigures(cpu, rss, threads, fds)


def matches(name: str, proc_name: str, cmdline: list[str]) -> int:
    """0 = no match, 2 = process or executable name, 1 = a command-line argument."""
    if proc_name == name or (cmdline and os.path.basename(cmdline[0]) == name):
        return 2
    return 1 if name in cmdline[1:] else 0


class ProcessCollector:
    name = "process"

    def __init__(
        self,
        watch_pid: int | None = None,
        watch_process: str | None = None,
        children: Callable[[], list[int]] | None = None,
    ) -> None:
        self._self = psutil.Process()
        self._children = children
        self._workers: dict[int, psutil.Process] = {}
        self._watch_pid = watch_pid
        self._watch_name = watch_process
        self._server: psutil.Process | None = None
        self._next_search = 0.0
        self._descendants: list[psutil.Process] = []
        self._next_tree = 0.0

    @property
    def watching(self) -> bool:
        return self._watch_pid is not None or self._watch_name is not None

    def collect(self) -> Iterable[Metric]:
        families = [
            spec.family()
            for spec in (
                m.PROCESS_UP,
                m.PROCESS_CPU,
                m.PROCESS_RSS,
                m.PROCESS_THREADS,
                m.PROCESS_FDS,
            )
        ]
        self._add(families, "sidecar", self._self, self._own_children())
        if self.watching:
            server = self._find_server()
            self._add(families, "server", server, self._server_descendants(server))
        return families

    def _own_children(self) -> list[psutil.Process]:
        """The proxy workers (pids from the supervisor: no scan of /proc per scrape)."""
        if self._children is None:
            return []
        # a worker on a thread of this process (the tests' in-process sidecar) is counted
        pids = [pid for pid in self._children() if pid != self._self.pid]
        for pid in set(self._workers) - set(pids):
            del self._workers[pid]
        for pid in pids:
            if pid not in self._workers:
                try:
                    self._workers[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    continue
        return list(self._workers.values())

    def _server_descendants(self, server: psutil.Process | None) -> list[psutil.Process]:
        """Listing descendants scans all of /proc, so it is refreshed now and then only."""
        now = time.monotonic()
        if server is not None and now >= self._next_tree:
            self._next_tree = now + TREE_INTERVAL
            try:
                self._descendants = server.children(recursive=True)
            except psutil.Error:
                self._descendants = []
        return self._descendants

    def _add(
        self,
        families: list[m.Family],
        role: str,
        proc: psutil.Process | None,
        descendants: list[psutil.Process],
    ) -> None:
        up, cpu, rss, threads, fds = families
        figures = None
        if proc is not None:
            try:
                figures = tree_figures(proc, descendants)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if role == "server":
                    log.warning("inference server process gone", extra={"pid": proc.pid})
                    self._server, self._next_tree = None, 0.0
        up.add_metric([role], 1.0 if figures else 0.0)
        if figures is None:
            return
        cpu.add_metric([role], figures.cpu_seconds)
        rss.add_metric([role], figures.rss_bytes)
        threads.add_metric([role], figures.threads)
        fds.add_metric([role], figures.fds)

    def _find_server(self) -> psutil.Process | None:
        if self._server is not None:
            if self._server.is_running():
                return self._server
            log.warning("inference server process gone", extra={"pid": self._server.pid})
            self._server, self._next_tree = None, 0.0
        now = time.monotonic()
        if now < self._next_search:
            return None
        self._next_search = now + SEARCH_INTERVAL
        if self._watch_pid is not None:
            try:
                self._server = psutil.Process(self._watch_pid)
            except psutil.NoSuchProcess:
                return None
        elif self._watch_name is not None:
            self._server = self._search(self._watch_name)
        if self._server is not None:
            log.info("watching inference server process", extra={"pid": self._server.pid})
        return self._server

    def _search(self, name: str) -> psutil.Process | None:
        """Best match wins, then the oldest (the parent of a server's workers)."""
        ours = {self._self.pid, *(p.pid for p in self._self.children(recursive=True))}
        best: tuple[int, float, psutil.Process] | None = None
        for proc in psutil.process_iter(["name", "cmdline", "create_time"]):
            if proc.pid in ours:
                continue
            info = proc.info
            score = matches(name, info["name"] or "", info["cmdline"] or [])
            if not score:
                continue
            key = (-score, info["create_time"] or 0.0, proc)
            if best is None or key[:2] < best[:2]:
                best = key
        return best[2] if best else None
