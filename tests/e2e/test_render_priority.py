"""A scrape renders on the supervisor's render thread at a lower CPU priority; the proxy
workers keep theirs (they time user traffic), also a worker restarted after a crash."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from harness.sidecar import run_sidecar, wait_for
from harness.upstream import scripted_upstream
from infermeter.exposition import RENDER_NICE

pytestmark = pytest.mark.e2e


def nice_by_thread(pid: int) -> dict[int, int]:
    """Niceness of every thread of a process (field 19 of /proc/PID/task/TID/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out[int(tid)] = int(fields[16])
    return out


def test_render_thread_is_niced_and_workers_are_not(tmp_path: Path) -> None:
    with (
        scripted_upstream() as upstream,
        run_sidecar(tmp_path, "--no-gpu-metrics", "--workers", "2", upstream=upstream.url) as sc,
    ):
        supervisor = sc.proc.pid
        before = nice_by_thread(supervisor)
        assert set(before.values()) == {0}
        assert "infermeter_workers_ready" in sc.metrics()  # a render ran
        after = nice_by_thread(supervisor)
        assert after[supervisor] == 0  # the loop that serves /healthz and hand-overs
        assert sorted(v for v in after.values() if v) == [RENDER_NICE]  # one render thread

        def workers() -> list[psutil.Process]:
            found = psutil.Process(supervisor).children()
            return found if len(found) == 2 else []

        first = wait_for(workers, what="two workers")
        for worker in first:
            assert set(nice_by_thread(worker.pid).values()) == {0}
        os.kill(first[0].pid, signal.SIGKILL)  # the restart is spawned after renders ran

        def restarted() -> list[psutil.Process]:
            found = workers()
            return found if found and first[0].pid not in {p.pid for p in found} else []

        for worker in wait_for(restarted, what="a restarted worker"):
            assert set(nice_by_thread(worker.pid).values()) == {0}
