from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from harness.sidecar import run_sidecar, value
from infermeter.process import ProcessCollector, matches, tree_figures


@pytest.mark.parametrize(
    ("name", "proc_name", "cmdline", "score"),
    [
        ("vllm", "vllm", ["/usr/bin/python3", "/usr/local/bin/vllm", "serve", "m"], 2),
        ("python3", "python3", ["python3", "-m", "x"], 2),
        ("llama-server", "llama-serve", ["/opt/llama-server", "-m", "x"], 2),  # comm is cut at 15
        (
            "vllm.entrypoints.openai.api_server",
            "python3",
            ["python3", "-m", "vllm.entrypoints.openai.api_server"],
            1,
        ),
        ("vllm", "python3", ["python3", "-m", "vllm.entrypoints.openai.api_server"], 0),
        ("vllm", "bash", [], 0),
    ],
)
def test_matches(name: str, proc_name: str, cmdline: list[str], score: int) -> None:
    assert matches(name, proc_name, cmdline) == score


@pytest.fixture
def server_tree(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A 'server' process with a child, under a unique executable name."""
    exe = tmp_path / "fake-inference-srv"
    shutil.copy("/bin/sh", exe)
    proc = subprocess.Popen([str(exe), "-c", "sleep 60 & sleep 60; wait"])
    try:
        yield proc
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
        proc.kill()
        proc.wait()


def test_tree_figures_cover_descendants(server_tree: subprocess.Popen[bytes]) -> None:
    root = psutil.Process(server_tree.pid)
    figures = psutil_wait_children(root, 2)
    assert figures.threads >= 3  # shell + two sleeps
    assert figures.fds >= 3
    assert figures.rss_bytes > root.memory_info().rss


def psutil_wait_children(root: psutil.Process, count: int) -> object:
    from harness.sidecar import wait_for

    wait_for(lambda: len(root.children(recursive=True)) >= count, what="children")
    return tree_figures(root, root.children(recursive=True))


def test_collector_reports_sidecar_and_watched_pid(server_tree: subprocess.Popen[bytes]) -> None:
    families = {f.name: f for f in ProcessCollector(watch_pid=server_tree.pid).collect()}
    up = {s.labels["process"]: s.value for s in families["infermeter_process_up"].samples}
    assert up == {"sidecar": 1.0, "server": 1.0}
    threads = {s.labels["process"]: s.value for s in families["infermeter_process_threads"].samples}
    assert threads["server"] >= 1


def test_collector_without_watch_reports_only_itself() -> None:
    families = {f.name: f for f in ProcessCollector().collect()}
    assert [s.labels for s in families["infermeter_process_up"].samples] == [{"process": "sidecar"}]


def test_sidecar_finds_server_by_name_and_notices_it_gone(
    tmp_path: Path, server_tree: subprocess.Popen[bytes]
) -> None:
    with run_sidecar(
        tmp_path, "--no-gpu-metrics", "--watch-process", "fake-inference-srv"
    ) as sidecar:
        text = sidecar.wait_metric("infermeter_process_up", 1.0, process="server")
        assert value(text, "infermeter_process_cpu_seconds_total", process="server") is not None
        for child in psutil.Process(server_tree.pid).children(recursive=True):
            child.kill()
        server_tree.kill()
        server_tree.wait()
        text = sidecar.wait_metric("infermeter_process_up", 0.0, process="server")
    assert value(text, "infermeter_process_threads", process="server") is None
    assert "inference server process gone" in sidecar.log()


def test_missing_pid_reports_server_down(tmp_path: Path) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # a PID that no longer exists
    with run_sidecar(tmp_path, "--no-gpu-metrics", "--watch-pid", str(proc.pid)) as sidecar:
        text = sidecar.wait_metric("infermeter_process_up", 0.0, process="server")
    assert value(text, "infermeter_process_up", process="sidecar") == 1.0
    # one answer for the sidecar's own figures: client_python's process_* (the supervisor
    # alone, not its workers) is not exported
    assert not re.search(r"^(# (HELP|TYPE) )?process_", text, re.MULTILINE)
    assert "python_info" in text
