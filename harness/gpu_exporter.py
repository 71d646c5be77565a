"""The process of `harness.gpu_probe`: the sidecar's GPU poller and collector, served.

`python -m harness.gpu_exporter --port P --poll-interval S`: `GpuPoller` (its thread, XID
watcher and logs, plain format on stderr) and `GpuCollector` through the real nvidia-ml-py,
on `/metrics` of prometheus_client's server at 127.0.0.1:P, until SIGTERM. It imports only
what that needs (not httpx, not the test harness): each NVML-variant test starts one.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from infermeter import logs
from infermeter.collectors import CollectorSet
from infermeter.gpu.collector import GpuCollector
from infermeter.gpu.poller import GpuPoller


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
