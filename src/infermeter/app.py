"""Wires settings to the registry, collectors and servers; runs until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import platform
import signal

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector
from prometheus_client import ProcessCollector as ClientProcessCollector

from infermeter import __version__
from infermeter import metrics as m
from infermeter.collectors import CollectorSet, Part
from infermeter.exposition import MetricsServer
from infermeter.gpu import nvml
from infermeter.gpu.collector import GpuCollector
from infermeter.gpu.poller import GpuPoller
from infermeter.process import ProcessCollector
from infermeter.settings import Settings

log = logging.getLogger(__name__)


class Exporter:
    """Everything `infermeter serve` runs, startable and stoppable (tests use it in-process)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        ClientProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        build = Gauge(
            m.BUILD_INFO.name, m.BUILD_INFO.help, m.BUILD_INFO.labels, registry=self.registry
        )
        build.labels(__version__, platform.python_version(), nvml.bindings_version()).set(1)
        self.poller = (
            GpuPoller(settings.gpu_poll_interval, settings.gpus) if settings.gpu_metrics else None
        )
        parts: list[Part] = []
        if self.poller is not None:
            parts.append(GpuCollector(self.poller))
        parts.append(ProcessCollector(settings.watch_pid, settings.watch_process))
        self.registry.register(CollectorSet(parts))
        self.metrics_server = MetricsServer(settings.metrics_listen, self.registry, self.readiness)
        self.stopping = False

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if self.poller is not None and not self.poller.first_poll_done:
            return False, "waiting for the first GPU poll"
        return True, "ready"

    def start(self) -> None:
        self.metrics_server.start()
        if self.poller is not None:
            self.poller.start()

    def stop(self) -> None:
        self.stopping = True
        if self.poller is not None:
            self.poller.stop()
        self.metrics_server.stop()


async def _wait_for_signal() -> signal.Signals:
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    return await received


def run(settings: Settings) -> int:
    exporter = Exporter(settings)
    exporter.start()
    log.info(
        "infermeter started",
        extra={"version": __version__, "metrics": str(settings.metrics_listen)},
    )
    sig = asyncio.run(_wait_for_signal())
    log.info("shutting down", extra={"signal": sig.name})
    exporter.stop()
    return 0
