"""Wires settings to the supervisor: registry, collectors, metrics server and proxy workers.

The process model (design notes in the README): this process, the supervisor, owns the
metrics port, NVML, the process collectors and rendering; `--workers` proxy worker
processes (`infermeter.worker`) share the proxy's listening socket, time the traffic in
plain accumulators and hand them over on a Unix socket. With no upstream there are no
workers: the supervisor alone is the exporter.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import signal
from collections.abc import Callable, Iterable
from functools import partial

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    PlatformCollector,
    disable_created_metrics,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from infermeter import __version__
from infermeter import metrics as m
from infermeter.accumulators import Store
from infermeter.collectors import CollectorSet, Part
from infermeter.cpus import resolve_workers
from infermeter.engine.collector import EngineCollector
from infermeter.engine.fetcher import EngineFetcher, resolve_url
from infermeter.exposition import MetricsServer
from infermeter.gpu import nvml
from infermeter.gpu.collector import GpuCollector
from infermeter.gpu.poller import GpuPoller
from infermeter.guard import counting, guarded_protocol, settings_limits
from infermeter.kubelet.collector import KubeletCollector
from infermeter.kubelet.poller import PodResourcesPoller
from infermeter.merge import Merger
from infermeter.metrics_auth import metrics_auth
from infermeter.net import StartupError, bind
from infermeter.process import ProcessCollector
from infermeter.proxy.model_slots import ModelSlots
from infermeter.proxy.recorder import allow_list, label_model
from infermeter.render import Renderer, exposition
from infermeter.runtime import FD_LIMIT_CAP, loop_factory, raise_fd_limit
from infermeter.settings import DEFAULT_POD_RESOURCES_SOCKET, Settings
from infermeter.supervisor import SpawnWorker, WorkerPool, spawn_process

__all__ = ["FD_LIMIT_CAP", "Sidecar", "raise_fd_limit", "run"]
log = logging.getLogger(__name__)


class _PoolMetrics(Collector):
    """The supervisor's view of its workers, rendered after the proxy's families."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool

    def describe(self) -> Iterable[Metric]:
        return self.pool.collect()  # cheap; names it so that `name[]` filters find it

    def collect(self) -> Iterable[Metric]:
        return self.pool.collect()


class Sidecar:
    """Everything `infermeter serve` runs (in the supervisor process)."""

    def __init__(self, settings: Settings, spawn: SpawnWorker = spawn_process) -> None:
        """`spawn`: how proxy workers start (processes, but threads in the tests' in-process
        sidecar)."""
        self.settings = settings
        self.spawn = spawn
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
        self.registry = CollectorRegistry(auto_describe=False)
        # The sidecar's own CPU, memory and fds are infermeter_process_*{process="sidecar"}:
        # the supervisor and its proxy workers. client_python's process_* would describe the
        # supervisor alone, a second and smaller answer to the same question.
        PlatformCollector(registry=self.registry)
        build = Gauge(
            m.BUILD_INFO.name, m.BUILD_INFO.help, m.BUILD_INFO.labels, registry=self.registry
        )
        build.labels(__version__, platform.python_version(), nvml.bindings_version()).set(1)
        self.poller = (
            GpuPoller(settings.gpu_poll_interval, settings.gpus) if settings.gpu_metrics else None
        )
        self.merger = Merger()
        self.renderer = Renderer(self.merger)
        self.tail: CollectorRegistry | None = None
        self.pool: WorkerPool | None = None
        self.workers = resolve_workers(settings.workers) if settings.upstream else 0
        self.kubelet = pod_resources_poller(settings) if self.poller is not None else None
        parts: list[Part] = []
        if self.poller is not None:
            pods = self.kubelet.attribution if self.kubelet is not None else None
            parts.append(GpuCollector(self.poller, settings.dcgm_compat, pods))
        if self.kubelet is not None:
            parts.append(KubeletCollector(self.kubelet))
        parts.append(
            ProcessCollector(settings.watch_pid, settings.watch_process, children=self._pids)
        )
        self.registry.register(CollectorSet(parts))
        # The supervisor's own accumulators (the metrics port's refusals), merged as
        # source 0 with the workers' (their proxy port's refusals share the family).
        self.own = Store()
        self.rejected = self.own.live(m.HTTP_REJECTED)
        self.merger.declare(self.own.declarations())
        self.slots: ModelSlots | None = None
        labeller = None
        if settings.upstream is not None:
            self.slots = ModelSlots.create(settings.max_models, fixed=allow_list(settings.models))
            labeller = partial(label_model, self.slots)
        # engine models share the proxy's model cap (one set of names overall); a model the
        # engine reports is served, so it takes a slot without waiting for a 2xx
        self.engine = make_engine_fetcher(settings, labeller)
        if self.engine is not None:
            parts.append(EngineCollector(self.engine))  # CollectorSet reads this same list
        tls = None
        if settings.metrics_tls_cert_file and settings.metrics_tls_key_file:
            tls = (str(settings.metrics_tls_cert_file), str(settings.metrics_tls_key_file))
        self.metrics_server = MetricsServer(
            settings.metrics_listen,
            self.render,
            self.readiness,
            metrics_auth(settings),
            tls,
            guarded_protocol(
                settings_limits(settings, settings.metrics_max_connections),
                counting(self.rejected, "metrics"),
            ),
            prepare=self._take_own,
        )
        self.stopping = False

    def _pids(self) -> list[int]:
        return self.pool.pids() if self.pool is not None else []

    def _take_own(self) -> None:
        """On the loop, which owns them: the metrics port's own refusals, merged as source 0."""
        items = self.own.take_copy()
        with self.merger.lock:
            self.merger.update(0, items)

    def render(self, openmetrics: bool, names: frozenset[str] | None) -> bytes:
        """On the render thread; the merger is shared with the loop's hand-overs."""
        with self.merger.lock:
            return exposition(self.registry, self.renderer, self.tail, openmetrics, names)

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if self.pool is not None and not self.pool.ready():
            return False, "proxy workers starting"
        if self.poller is not None and not self.poller.first_poll_done:
            return False, "waiting for the first GPU poll"
        return True, "ready"

    async def serve(self, stop: asyncio.Event) -> int:
        self.metrics_server.start()
        if self.poller is not None:
            self.poller.start()
        listen = None
        if self.engine is not None:
            self.engine.start()
        if self.kubelet is not None:
            self.kubelet.start()
        try:
            if self.settings.upstream is not None:
                listen = bind("listen", self.settings.listen)
                assert self.slots is not None
                attribute_slots = [
                    ModelSlots.create(self.settings.max_attribute_values)
                    for _ in self.settings.attribute
                ]
                self.pool = WorkerPool(
                    self.settings,
                    self.workers,
                    listen,
                    self.slots,
                    self.merger,
                    attribute_slots,
                    self.spawn,
                )
                self.tail = CollectorRegistry(auto_describe=False)
                self.tail.register(_PoolMetrics(self.pool))
                await self.pool.start()
                log.info(
                    "proxy listening",
                    extra={
                        "address": str(self.settings.listen),
                        "upstream": self.settings.upstream,
                        "workers": self.workers,
                    },
                )
                failed = asyncio.create_task(self.pool.wait_failed())
                await asyncio.wait(
                    [failed, asyncio.create_task(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if failed.done():
                    raise StartupError(failed.result())
            else:
                await stop.wait()
            if listen is not None:
                # Once the workers close their copies too, new connections are refused
                # rather than left in a backlog nobody accepts from.
                listen.close()
            if self.pool is not None:
                log.info("draining", extra={"timeout": self.settings.drain_timeout})
                await self.pool.stop_accepting()
            self.stopping = True  # /readyz answers 503 from now on
            if self.pool is not None:
                await self.pool.stop()
        finally:
            if self.pool is not None and not self.pool.stopping:
                await self.pool.stop()
            if listen is not None:
                listen.close()
            if self.poller is not None:
                self.poller.stop()
            if self.engine is not None:
                self.engine.stop()
            if self.kubelet is not None:
                self.kubelet.stop()
            await self.metrics_server.stop()
        return 0


def make_engine_fetcher(
    settings: Settings, model_label: Callable[[str], str] | None = None
) -> EngineFetcher | None:
    """The engine /metrics fetcher, or None when there is nothing to fetch."""
    url = resolve_url(settings.engine_metrics, settings.upstream)
    if url is None or settings.engine == "ollama":
        return None
    return EngineFetcher(
        url,
        auto=settings.engine_metrics == "auto",
        interval=settings.engine_metrics_interval,
        timeout=settings.engine_metrics_timeout,
        max_bytes=settings.engine_metrics_max_bytes,
        engine=settings.engine,
        max_models=settings.max_models,
        model_label=model_label,
    )


def pod_resources_poller(settings: Settings) -> PodResourcesPoller | None:
    """Pod attribution when a socket is configured; the default one only where the kubelet's
    pod-resources directory exists (the socket itself may be between two kubelet restarts)."""
    path = settings.kubelet_pod_resources
    if path is None:
        return None
    if path == DEFAULT_POD_RESOURCES_SOCKET and not path.parent.is_dir():
        log.debug(
            "no kubelet pod-resources socket: pod attribution off", extra={"socket": str(path)}
        )
        return None
    log.info("pod attribution on", extra={"socket": str(path)})
    return PodResourcesPoller(path, settings.kubelet_pod_resources_interval)


def run(settings: Settings) -> int:
    raise_fd_limit()
    sidecar = Sidecar(settings)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, stop, sig)
        return await sidecar.serve(stop)

    log.info(
        "infermeter starting",
        extra={"version": __version__, "metrics": str(settings.metrics_listen)},
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        code = runner.run(main())
    log.info("stopped")
    return code


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("shutting down", extra={"signal": sig.name})
        stop.set()
