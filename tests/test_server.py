"""The metrics server of the real sidecar: endpoints, logs, start-up failures, shutdown."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from harness.sidecar import INFERMETER, run_sidecar


def test_endpoints(tmp_path: Path) -> None:
    with run_sidecar(tmp_path, "--no-gpu-metrics") as sidecar:
        assert sidecar.get("/healthz").text == "ok\n"
        ready = sidecar.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        assert "/metrics" in sidecar.get("/").text
        plain = sidecar.get("/metrics")
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "infermeter_build_info{" in plain.text
        gz = sidecar.get("/metrics", **{"Accept-Encoding": "gzip"})
        assert gz.headers.get("content-encoding") == "gzip"
        assert sidecar.get("/nope").status_code == 404
        code = sidecar.stop()
    assert code == 0
    assert "shutting down" in sidecar.log()


def test_json_logs_one_object_per_line(tmp_path: Path) -> None:
    with run_sidecar(tmp_path, "--log-format", "json", "--gpu-poll-interval", "0.1") as sidecar:
        sidecar.metrics()
    lines = [line for line in sidecar.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    nvml = [r for r in records if r["message"].startswith("NVML unavailable")]
    assert nvml
    assert nvml[0]["reason"] == "library_not_found"
    assert nvml[0]["level"] == "WARNING"


def test_busy_metrics_port_fails_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [INFERMETER, "serve", "--no-gpu-metrics", "--metrics-listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert (
        f"infermeter: cannot listen on metrics_listen 127.0.0.1:{port}: Address already in use"
        in result.stderr
    )


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    """Two sockets per stream: a soft limit of 1,024 would cap the proxy near 500 streams."""
    import resource

    from infermeter.app import raise_fd_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        raised = raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == raised
        assert raised == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
