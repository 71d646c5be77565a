"""`bench.tree`: the benchmarks' CPU figures read each process's own CPU clock (nanoseconds),
and a sidecar's figure covers its supervisor and every worker below it."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.tree import process_cpu, tree_cpu

#: A child that burns about 0.3 s of CPU, starts a grandchild that burns as much, and waits.
_BURNER = """
import subprocess, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
if sys.argv[1] == "parent":
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], "child", sys.argv[2]])
    burn(0.3)
    print("burnt", flush=True)
    child.wait()
else:
    burn(0.3)
    print("burnt", flush=True)
    time.sleep(60)
"""


def _wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the burners did not finish"
        time.sleep(0.05)


def test_process_cpu_is_the_process_clock_and_tree_cpu_adds_descendants() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _BURNER, "parent", _BURNER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert [proc.stdout.readline(), proc.stdout.readline()] == ["burnt\n", "burnt\n"]
        root = psutil.Process(proc.pid)
        _wait_until(lambda: len(root.children()) == 1)
        child = root.children()[0]
        own, child_own = process_cpu(proc.pid), process_cpu(child.pid)
        assert own is not None
        assert child_own is not None
        # The same clock /proc counts in ticks: they agree within a tick or two.
        ticks = root.cpu_times()
        assert abs(own - (ticks.user + ticks.system)) < 0.05
        assert 0.3 <= own < 1.5
        assert 0.3 <= child_own < 1.5
        total = tree_cpu(proc.pid)
        assert own + child_own <= total < own + child_own + 0.05  # nothing else burns
    finally:
        for p in psutil.Process(proc.pid).children(recursive=True):
            p.kill()
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_process_that_is_gone_has_no_clock() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert process_cpu(proc.pid) is None
