"""The sidecar's GPU part alone in a process of its own, for tests of NVML library variants.

A test of a driver that lacks some NVML function needs its own build of the fake library,
and nvidia-ml-py loads one library per process: so each such case needs a process. This one
runs what the sidecar runs for GPUs — `GpuPoller` (its thread, XID watcher and logs) and
`GpuCollector` through the real nvidia-ml-py — and serves them on `/metrics` with
prometheus_client's server; it leaves out what `infermeter serve` adds around them
(settings, the metrics port's guard, the renderer, the proxy), which tests of the sidecar
as a whole cover. It starts in about a third of the CPU `infermeter serve` takes.

The process is `python -m harness.gpu_exporter` (its own module, which imports neither
httpx nor this harness); LD_LIBRARY_PATH and FAKE_NVML_CONFIG choose the library and its
state.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.sidecar import Sidecar, free_port, serving


class GpuProbe(Sidecar):
    """The probe process, read as a sidecar without a proxy (`metrics`, `wait_metric`,
    `log`); it is ready once it serves the GPU families."""

    kind, ready_path = "GPU probe", "/metrics?name[]=infermeter_gpu_up"


@contextmanager
def run_gpu_probe(
    tmp_path: Path, lib_dir: Path, nvml_state: Path, poll_interval: float = 0.1
) -> Iterator[GpuProbe]:
    """The probe on a free loopback port, with the fake library in `lib_dir`."""
    port = free_port()
    log = tmp_path / f"gpu-probe-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMETER_")}
    env.update(LD_LIBRARY_PATH=str(lib_dir), FAKE_NVML_CONFIG=str(nvml_state))
    argv = [sys.executable, "-m", "harness.gpu_exporter", "--port", str(port)]
    argv += ["--poll-interval", str(poll_interval)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).parents[1],
        )
    probe = GpuProbe(proc, port, log, None)
    with serving(probe, ready=True):
        yield probe
