"""Section `workers`: what the process model costs in memory and buys in streams.

- rss: resident memory of a fresh sidecar with `--workers 1` (supervisor + one worker) and
  with `--workers 2`: the supervisor's share, each worker's, the cost of one more worker.
- pinned: the sustained search (added per-event p99 < 5 ms) with the proxy on one core:
  infermeter (supervisor and one worker, started under taskset) and then nginx (its one
  worker) each on core A in their turn, the demo upstream and this load generator on core
  B. The fair "one core each" comparison of the two proxies.
- shared: the same search with `--workers 2` and nothing pinned (every process on both
  cores), against nginx's one worker: what a second worker buys on this machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench import nginx
from bench.tree import processes
from harness.sidecar import run_sidecar

Sustained = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def rss(work: Path, upstream: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (1, 2):
        with run_sidecar(
            work, "--no-gpu-metrics", "--workers", str(count), upstream=upstream
        ) as sidecar:
            time.sleep(1.0)  # settled after start-up
            procs = processes(sidecar.proc.pid)
            supervisor = procs[0].memory_info().rss
            workers = [p.memory_info().rss for p in procs[1:]]
        out[str(count)] = {
            "supervisor_mb": round(supervisor / 2**20, 1),
            "workers_mb": [round(w / 2**20, 1) for w in workers],
            "total_mb": round((supervisor + sum(workers)) / 2**20, 1),
        }
    out["extra_worker_mb"] = round(out["2"]["total_mb"] - out["1"]["total_mb"], 1)
    return out


def _pin(pid: int, cpus: set[int]) -> dict[int, set[int]]:
    """Pin every thread of `pid`; return what each had, to restore it."""
    before = {}
    for thread in psutil.Process(pid).threads():
        try:
            before[thread.id] = os.sched_getaffinity(thread.id)
            os.sched_setaffinity(thread.id, cpus)
        except OSError:
            continue
    return before


def _restore(saved: dict[int, set[int]]) -> None:
    for tid, cpus in saved.items():
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            continue


@contextmanager
def _pinned(pids: list[int], cpus: set[int]) -> Iterator[None]:
    saved: dict[int, set[int]] = {}
    for pid in pids:
        saved |= _pin(pid, cpus)
    try:
        yield
    finally:
        _restore(saved)


def run(
    work: Path,
    upstream: str,
    upstream_pid: int | None,
    sustained: Sustained,
    steps: list[int],
    tries: int,
    per_stream: int,
    tokens: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {"rss": rss(work, upstream)}
    direct = (int(upstream.rsplit(":", 1)[1]), None)
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2 or upstream_pid is None:
        out["pinned"] = {"skipped": "needs two CPUs and the upstream's PID"}
    else:
        proxy_core, client_core = {cores[0]}, {cores[1]}
        with _pinned([os.getpid(), upstream_pid], client_core), ExitStack() as stack:
            paths: dict[str, tuple[int, int | None]] = {"direct": direct}
            if nginx.available():
                url, worker = stack.enter_context(nginx.nginx_proxy(upstream))
                stack.enter_context(_pinned([worker], proxy_core))
                paths["nginx"] = (int(url.rsplit(":", 1)[1]), worker)
            sidecar = stack.enter_context(
                run_sidecar(
                    work, "--no-gpu-metrics", "--workers", "1", upstream=upstream,
                    prefix=("taskset", "-c", str(cores[0])),
                )
            )  # fmt: skip
            paths["infermeter"] = (int(sidecar.proxy_url.rsplit(":", 1)[1]), sidecar.proc.pid)
            out["pinned"] = asyncio.run(sustained(paths, steps, tries, per_stream, tokens))
            out["pinned"]["cores"] = {"proxy": cores[0], "upstream_and_client": cores[1]}
    with ExitStack() as stack:
        paths = {"direct": direct}
        if nginx.available():
            url, worker = stack.enter_context(nginx.nginx_proxy(upstream))
            paths["nginx"] = (int(url.rsplit(":", 1)[1]), worker)
        sidecar = stack.enter_context(
            run_sidecar(work, "--no-gpu-metrics", "--workers", "2", upstream=upstream)
        )
        paths["infermeter"] = (int(sidecar.proxy_url.rsplit(":", 1)[1]), sidecar.proc.pid)
        out["shared_two_workers"] = asyncio.run(sustained(paths, steps, tries, per_stream, tokens))
    return out
