"""The in-process sidecar (harness/inprocess.py) leaves nothing behind and keeps logs apart.

Most proxy tests run against it, so a leak would grow over the whole session: after each
stop the test process must have the threads and open files it had before, tracing (OTLP
exporters and their threads) included."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import http_client
from harness.fake_nvml import profiles
from harness.inprocess import NvmlLibraryConflict, inprocess_demo_upstream, run_inprocess
from harness.otlp_receiver import otlp_receiver
from harness.sidecar import read_until_cut, value, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled(count: Callable[[], int]) -> int:
    """Once servers have closed their side of the connections a client closed, and their
    handler threads (the scripted upstream's, the OTLP receiver's) have ended: soon after."""
    counts = [count()]
    while len(counts) < 5 or len(set(counts[-5:])) > 1:
        time.sleep(0.05)
        counts.append(count())
    return counts[-1]


def settled_fds() -> int:
    return settled(open_fds)


def started_since(before: set[int | None]) -> list[threading.Thread]:
    """Threads started after `before` was taken and still alive once the test servers'
    handler threads have ended (a few seconds at most): the ones a stopped sidecar left.
    Only those: under xdist the process also runs other tests' servers, whose daemon
    threads come and go on their own."""
    deadline = time.monotonic() + 5
    while True:
        alive = [t for t in threading.enumerate() if t.ident not in before]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def thread_ids() -> set[int | None]:
    return {thread.ident for thread in threading.enumerate()}


def test_start_and_stop_leave_no_thread_and_no_open_file(tmp_path: Path) -> None:
    with scripted_upstream() as upstream, otlp_receiver() as receiver:
        upstream.script(CHAT, Script([(0, sse(TOKEN))]))
        fds: int | None = None
        root_level = logging.getLogger().level
        tracing = ("--otlp-endpoint", receiver.url, "--otlp-metrics")
        runs = [("1", ()), ("2", tracing), ("1", ()), ("2", ()), ("1", tracing), ("2", tracing)]
        for run, (workers, options) in enumerate(runs):
            spans = len(receiver.spans())
            before = thread_ids()
            with run_inprocess(
                tmp_path, "--no-gpu-metrics", "--workers", workers, *options,
                upstream=upstream.url, env={"OTEL_BSP_SCHEDULE_DELAY": "50"},
            ) as sidecar:  # fmt: skip
                with http_client.Client() as client:
                    response = client.post(sidecar.proxy_url + CHAT, json={"model": "m"})
                assert response.status_code == 200
                text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
                assert value(text, "infermeter_workers_ready") == float(workers)
                if options:  # its exporters ran
                    wait_for(lambda n=spans: len(receiver.spans()) > n, what="the span")
            assert sidecar.stop() == 0
            assert "OTLP export unfinished" not in sidecar.log()
            # the log is the sidecar's (as `infermeter serve` would write it)
            assert "proxy listening" in sidecar.log()
            assert "stopped" in sidecar.log()
            # a closed socket leaves TIME_WAIT, not a descriptor: counts must be back now
            # (after the first run: uvloop opens one pipe per process, once)
            assert started_since(before) == [], run
            fds = fds or open_fds()
            assert settled_fds() == fds, run
            assert logging.getLogger().level == root_level  # set while it ran, then restored


def test_gpus_leave_no_thread_and_no_open_file_and_one_library_per_process(
    tmp_path: Path, fake_nvml_dir: Path, old_driver_nvml_dir: Path
) -> None:
    """The NVML poller and XID threads end with the sidecar and their lines reach its log;
    each sidecar reads its own state file (an XID event under an id an earlier file used is
    new); another build of the fake library is refused, since one stays loaded."""
    environ_before = os.environ.get("FAKE_NVML_CONFIG")
    fds: int | None = None
    state = tmp_path / "nvml.json"
    for run in range(3):
        state = tmp_path / f"nvml-{run}.json"
        events = [{"id": 1, "device": run % 2, "xid": 79}]
        profiles.write(state, profiles.state([profiles.gpu(0), profiles.gpu(1)], xid_events=events))
        before = thread_ids()
        with run_inprocess(
            tmp_path, "--gpu-poll-interval", "0.1", lib_dir=fake_nvml_dir, nvml_state=state
        ) as sidecar:
            assert os.environ["FAKE_NVML_CONFIG"] == str(state)
            sidecar.wait_metric("infermeter_gpu_xid_errors_total", 1.0, gpu=str(run % 2), xid="79")
        assert sidecar.stop() == 0
        assert "NVML initialised" in sidecar.log()  # the poller thread's line
        assert "GPU XID error" in sidecar.log()  # the XID thread's
        assert "stopped" in sidecar.log()
        assert started_since(before) == [], run
        fds = fds or open_fds()
        assert settled_fds() == fds, run
        assert os.environ.get("FAKE_NVML_CONFIG") == environ_before
    with (
        pytest.raises(NvmlLibraryConflict, match=r"harness\.sidecar\.run_sidecar"),
        run_inprocess(tmp_path, "--gpu-poll-interval", "0.1", lib_dir=old_driver_nvml_dir),
    ):
        pass
    # refused before anything started, and the loaded library still serves
    with run_inprocess(
        tmp_path, "--gpu-poll-interval", "0.1", lib_dir=fake_nvml_dir, nvml_state=state
    ) as sidecar:
        sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")


def test_the_inprocess_demo_upstream_leaves_no_thread_and_no_open_file() -> None:
    fds: int | None = None
    for run in range(3):
        before = thread_ids()
        with inprocess_demo_upstream() as upstream, http_client.Client() as client:
            body = {
                "model": "m",
                "stream": True,
                "max_tokens": 3,
                "messages": [{"role": "user", "content": "x"}],
            }
            response = client.post(upstream + CHAT, json=body, headers={"x-demo-ttft": "0"})
            assert response.status_code == 200
            assert response.text.endswith("data: [DONE]\n\n")
        assert started_since(before) == [], run
        fds = fds or settled_fds()
        assert settled_fds() == fds, run


def test_two_at_once_write_their_own_logs(tmp_path: Path) -> None:
    with (
        scripted_upstream() as upstream,
        run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as first,
        run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as second,
    ):
        upstream.script(CHAT, Script([(0, sse(TOKEN))], end="reset"))
        read_until_cut(first.proxy_url + CHAT, {"model": "m", "stream": True})
        wait_for(lambda: "upstream stream ended early" in first.log(), what="the warning")
        first_log, second_log = first.log(), second.log()
    assert first.log_path != second.log_path
    assert f"address=127.0.0.1:{first.port}" in first_log
    assert f"address=127.0.0.1:{second.port}" not in first_log
    assert f"address=127.0.0.1:{second.port}" in second_log
    assert "upstream stream ended early" not in second_log


def test_a_busy_port_fails_start_up_with_exit_code_1(tmp_path: Path) -> None:
    with (
        scripted_upstream() as upstream,
        run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as running,
    ):
        busy = running.proxy_url.rsplit(":", 1)[1]
        fds = settled_fds()
        for _ in range(2):
            before = thread_ids()
            with run_inprocess(
                tmp_path, "--no-gpu-metrics", "--listen", f"127.0.0.1:{busy}", ready=False,
                upstream=upstream.url,
            ) as failing:  # fmt: skip
                wait_for(lambda: failing.exit_code() is not None, what="the exit")
                assert failing.exit_code() == 1
            assert "cannot listen on listen" in failing.log()
            assert started_since(before) == []
            assert settled_fds() == fds
