"""Wires settings to the registry, collectors and servers; runs until SIGTERM or SIGINT.

One process: the proxy runs on the main thread's event loop (uvloop when available);
the metrics server, the NVML poller and the XID watcher run in their own threads, so
nothing slow ever runs on the loop that times user traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import platform
import resource
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any, cast

import uvicorn
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    disable_created_metrics,
)
from prometheus_client import ProcessCollector as ClientProcessCollector

from infermeter import __version__
from infermeter import metrics as m
from infermeter.attribution import Attribution, parse_attributes
from infermeter.collectors import CollectorSet, Part
from infermeter.engine.collector import EngineCollector
from infermeter.engine.fetcher import EngineFetcher, resolve_url
from infermeter.exposition import MetricsServer
from infermeter.gpu import nvml
from infermeter.gpu.collector import GpuCollector
from infermeter.gpu.poller import GpuPoller
from infermeter.guard import Limits, guarded_protocol, proxy_connection_budget
from infermeter.kubelet.collector import KubeletCollector
from infermeter.kubelet.poller import PodResourcesPoller
from infermeter.loop_lag import watch_lag
from infermeter.metrics_auth import metrics_auth
from infermeter.net import bind
from infermeter.prices import load as load_prices
from infermeter.process import ProcessCollector
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.errors import HideAbortedStreams
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.settings import DEFAULT_POD_RESOURCES_SOCKET, Settings
from infermeter.streams.timing import SLO
from infermeter.tracing import Tracing, TracingConfig, enabled_by_environment

log = logging.getLogger(__name__)


class _ProxyServer(uvicorn.Server):
    """uvicorn without its own signal handling: the sidecar decides when to drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections and requests carry on."""
        for server in getattr(self, "servers", []):
            server.close()


class Sidecar:
    """Everything `infermeter serve` runs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
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
        self.kubelet = pod_resources_poller(settings) if self.poller is not None else None
        parts: list[Part] = []
        if self.poller is not None:
            pods = self.kubelet.attribution if self.kubelet is not None else None
            parts.append(GpuCollector(self.poller, settings.dcgm_compat, pods))
        if self.kubelet is not None:
            parts.append(KubeletCollector(self.kubelet))
        parts.append(ProcessCollector(settings.watch_pid, settings.watch_process))
        self.registry.register(CollectorSet(parts))
        self.rejected = cast(Counter, m.HTTP_REJECTED.live(self.registry))
        self.proxy: ProxyApp | None = None
        self.proxy_server: _ProxyServer | None = None
        self.tracing: Tracing | None = None
        self.recorder: Recorder | None = None
        if settings.upstream is not None:
            self._build_proxy(settings, settings.upstream)
        # engine models share the proxy's model cap (one set of names overall); a model the
        # engine reports is served, so it takes a slot without waiting for a 2xx
        labeller = self.recorder.engine_model_label if self.recorder is not None else None
        self.engine = make_engine_fetcher(settings, labeller)
        if self.engine is not None:
            parts.append(EngineCollector(self.engine))  # CollectorSet reads this same list
        tls = None
        if settings.metrics_tls_cert_file and settings.metrics_tls_key_file:
            tls = (str(settings.metrics_tls_cert_file), str(settings.metrics_tls_key_file))
        self.metrics_server = MetricsServer(
            settings.metrics_listen,
            self.registry,
            self.readiness,
            metrics_auth(settings),
            tls,
            self._protocol("metrics", settings.metrics_max_connections),
        )
        self.stopping = False

    def _protocol(self, listener: str, max_connections: int) -> type[asyncio.Protocol]:
        """uvicorn's HTTP protocol with our limits on head, timeouts and connections."""
        settings = self.settings
        limits = Limits(
            head_max_bytes=settings.request_head_max_bytes,
            max_headers=settings.request_max_headers,
            header_timeout=settings.request_header_timeout,
            body_timeout=settings.request_body_timeout,
            max_connections=max_connections,
        )
        children: dict[str, Any] = {}

        def reject(reason: str) -> None:
            child = children.get(reason)
            if child is None:
                child = children[reason] = self.rejected.labels(listener, reason)
            child.inc()

        return guarded_protocol(limits, reject)

    def _build_proxy(self, settings: Settings, upstream: str) -> None:
        attribution = Attribution(
            parse_attributes(settings.attribute), settings.max_attribute_values
        )
        recorder = Recorder(
            self.registry,
            settings.max_models,
            SLO(ttft=settings.slo_ttft, tpot=settings.slo_tpot, e2e=settings.slo_e2e),
            attribution,
            load_prices(settings.prices) if settings.prices is not None else None,
            settings.models,
        )
        self.recorder = recorder
        client = UpstreamClient(
            pool_size=settings.upstream_pool_size,
            pool_timeout=settings.upstream_pool_timeout,
            head_max_bytes=settings.upstream_head_max_bytes,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            total_timeout=settings.upstream_timeout,
        )
        self.tracing = make_tracing(settings, upstream)
        strip = attribution.headers if settings.strip_attribute_headers else frozenset()
        self.proxy = ProxyApp(
            upstream,
            client,
            recorder,
            tracing=self.tracing,
            strip_headers=strip,
            buffer_budget=settings.request_buffer_max_bytes,
        )
        self.lag = cast(Histogram, m.EVENT_LOOP_LAG.live(self.registry))
        self.tasks = cast(Gauge, m.EVENT_LOOP_TASKS.live(self.registry))
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        connections = proxy_connection_budget(
            settings.max_connections,
            FD_LIMIT_CAP if fd_limit == resource.RLIM_INFINITY else fd_limit,
            settings.metrics_max_connections,
        )
        if connections < settings.max_connections:
            log.warning(
                "max_connections lowered to fit the open-file limit",
                extra={"max_connections": connections, "open_files": fd_limit},
            )
        config = uvicorn.Config(
            self.proxy,
            loop="none",  # we own the loop
            http=self._protocol("proxy", connections),
            ws="none",  # upgrades are not tunnelled
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,  # we add X-Forwarded-* ourselves; no middleware on the path
            timeout_keep_alive=75,  # longer than any client's idle keep-alive
            timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
            backlog=2048,
        )
        self.proxy_server = _ProxyServer(config)
        logging.getLogger("uvicorn.error").addFilter(HideAbortedStreams())

    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        if self.proxy_server is not None and not self.proxy_server.started:
            return False, "proxy starting"
        if self.poller is not None and not self.poller.first_poll_done:
            return False, "waiting for the first GPU poll"
        return True, "ready"

    async def serve(self, stop: asyncio.Event) -> None:
        self.metrics_server.start()
        if self.poller is not None:
            self.poller.start()
        if self.engine is not None:
            self.engine.start()
        if self.kubelet is not None:
            self.kubelet.start()
        tasks: list[asyncio.Task[Any]] = []
        try:
            if self.proxy_server is not None:
                sock = bind("listen", self.settings.listen)
                tasks.append(asyncio.create_task(self.proxy_server.serve(sockets=[sock])))
                tasks.append(asyncio.create_task(watch_lag(self.lag, self.tasks)))
                log.info(
                    "proxy listening",
                    extra={
                        "address": str(self.settings.listen),
                        "upstream": self.settings.upstream,
                    },
                )
            await stop.wait()
            if self.proxy_server is not None:
                # Stop accepting now: uvicorn itself would notice should_exit only on its
                # next 0.1 s tick, and a client told "not ready" must not still get in.
                self.proxy_server.stop_accepting()
            self.stopping = True  # /readyz answers 503 from now on
            if self.proxy_server is not None and self.proxy is not None:
                log.info("draining", extra={"timeout": self.settings.drain_timeout})
                self.proxy.draining = True
                self.proxy_server.should_exit = True  # wait for open requests, then exit
                await tasks[0]
                if self.proxy.drain_aborted:
                    log.warning(
                        "drain timeout: open requests were ended",
                        extra={"requests": self.proxy.drain_aborted},
                    )
        finally:
            for task in tasks:
                task.cancel()
            if self.tracing is not None:
                self.tracing.shutdown()  # flushes the spans of the last requests
            if self.poller is not None:
                self.poller.stop()
            if self.engine is not None:
                self.engine.stop()
            if self.kubelet is not None:
                self.kubelet.stop()
            self.metrics_server.stop()


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


def make_tracing(settings: Settings, upstream: str) -> Tracing | None:
    """Tracing is off unless asked for, by our flag or by the standard OTEL_* variables."""
    if settings.otlp_endpoint is None and not enabled_by_environment(os.environ):
        return None
    config = TracingConfig(
        endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
        metrics=settings.otlp_metrics,
        capture_content=settings.capture_content,
        capture_max_bytes=settings.capture_content_max_bytes,
    )
    log.info(
        "tracing on",
        extra={"endpoint": settings.otlp_endpoint or "from OTEL_* environment",
               "sample_ratio": settings.trace_sample_ratio},
    )  # fmt: skip
    return Tracing(config, upstream)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# Rendering /metrics (thousands of samples) runs in another thread but holds the GIL; with
# Python's default 5 ms switch interval the proxy's loop would wait up to 5 ms behind it,
# inflating the latencies it measures. 0.5 ms bounds that wait.
SWITCH_INTERVAL = 0.0005


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; return the new soft limit.

    Every proxied stream holds two sockets, so the soft limit of 1,024 that many systems
    start processes with would cap the proxy near 500 concurrent streams.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


#: Used when the hard limit is unlimited (Linux refuses an unlimited soft limit).
FD_LIMIT_CAP = 1 << 20


def run(settings: Settings) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    raise_fd_limit()
    sidecar = Sidecar(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, stop, sig)
        await sidecar.serve(stop)

    log.info(
        "infermeter starting",
        extra={"version": __version__, "metrics": str(settings.metrics_listen)},
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    log.info("stopped")
    return 0


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("shutting down", extra={"signal": sig.name})
        stop.set()
