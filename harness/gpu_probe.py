"""The sidecar's GPU part alone in a process of its own, for tests of NVML library variants.

A test of a driver that lacks some NVML function needs its own build of the fake library,
and nvidia-ml-py loads one library per process: so each such case needs a process. This one
runs what the sidecar runs for GPUs — `GpuPoller` (its thread, XID watcher and logs) and
`GpuCollector` through the real nvidia-ml-py — and serves them on `/metrics` with
prometheus_client's server; it leaves out what `infermeter serve` adds around them
(settings, the metrics port's guard, the renderer, the proxy), which tests of the sidecar
as a whole cover. It starts in about a third of the CPU `infermeter serve` takes.

`python -m harness.gpu_probe --port P --poll-interval S` logs like the sidecar (plain
format) on stderr; LD_LIBRARY_PATH and FAKE_NVML_CONFIG choose the library and its state.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx
from prometheus_client import CollectorRegistry, start_http_server

from harness.sidecar import (
    READY_TIMEOUT,
    SidecarClient,
    free_port,
    serving,
    terminate,
    wait_for,
)
from infermeter import logs
from infermeter.collectors import CollectorSet
from infermeter.gpu.collector import GpuCollector
from infermeter.gpu.poller import GpuPoller


class GpuProbe(SidecarClient):
    """The probe process, read as a sidecar without a proxy (`metrics`, `wait_metric`,
    `log`)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        super().__init__(port, log, None)
        self.proc = proc

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> int:
        return terminate(self.proc)

    def wait_ready(self) -> None:
        def ready() -> bool:
            code = self.exit_code()
            if code is not None:
                raise AssertionError(f"GPU probe exited {code}:\n{self.log()}")
            try:
                return self.get("/metrics?name[]=infermeter_gpu_up").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, READY_TIMEOUT, "GPU probe")


@contextmanager
def run_gpu_probe(
    tmp_path: Path, lib_dir: Path, nvml_state: Path, poll_interval: float = 0.1
) -> Iterator[GpuProbe]:
    """The probe on a free loopback port, with the fake library in `lib_dir`."""
    port = free_port()
    log = tmp_path / f"gpu-probe-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMETER_")}
    env.update(LD_LIBRARY_PATH=str(lib_dir), FAKE_NVML_CONFIG=str(nvml_state))
    argv = [sys.executable, "-m", "harness.gpu_probe", "--port", str(port)]
    argv += ["--poll-interval", str(poll_interval)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).parents[1],
        )
    probe = GpuProbe(proc, port, log)
    with serving(probe, ready=True):
        yield probe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_probe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    args = parser.parse_args(argv)
    logs.configure("plain", "info")
    poller = GpuPoller(args.poll_interval)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CollectorSet([GpuCollector(poller, False, None)]))
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    poller.start()
    server, _ = start_http_server(args.port, addr="127.0.0.1", registry=registry)
    stop.wait()
    server.shutdown()
    poller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
