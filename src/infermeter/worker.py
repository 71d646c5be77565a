"""A proxy worker process: forwards and times traffic, hands its accumulators to the supervisor.

Started by the supervisor (`python -m infermeter.worker`) with three inherited descriptors:
the shared listening socket, its end of the channel (a Unix socketpair) and the model-slot
table. The first frame on the channel is the settings; from then on the worker only
writes: a snapshot of the series it touched every `SNAPSHOT_INTERVAL`, and a last one after
its drain. Nothing here renders an exposition or answers a scrape.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
import os
import resource
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from infermeter import metrics as m
from infermeter.accumulators import Store
from infermeter.attribution import OTHER, Attribution, parse_attributes
from infermeter.channel import SNAPSHOT_INTERVAL, encode, read_settings
from infermeter.guard import (
    counting,
    guarded_protocol,
    proxy_connection_budget,
    settings_limits,
    share,
)
from infermeter.loop_lag import watch_lag
from infermeter.otel_env import enabled_by_environment
from infermeter.prices import load as load_prices
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.errors import HideAbortedStreams
from infermeter.proxy.model_slots import ModelSlots, SharedCap
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.runtime import FD_LIMIT_CAP, loop_factory, raise_fd_limit
from infermeter.streams.timing import SLO
from infermeter.worker_config import WorkerConfig

log = logging.getLogger("infermeter.worker")  # not __main__ under -m


class ProxyServer(uvicorn.Server):
    """uvicorn without its own signal handling: the worker decides when to drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections and requests carry on."""
        for server in getattr(self, "servers", []):
            server.close()


class _Channel(asyncio.Protocol):
    """The worker's end: it writes; end-of-file means the supervisor is gone."""

    def __init__(self, gone: asyncio.Event) -> None:
        self.gone = gone
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone.set()
        if not self.closed.done():
            self.closed.set_result(None)

    def eof_received(self) -> bool:
        self.gone.set()
        return True  # keep our writing half open for the last snapshot


class Worker:
    def __init__(
        self,
        settings: WorkerConfig,
        index: int,
        listen: socket.socket,
        slots: ModelSlots,
        attribute_slots: list[ModelSlots],
        workers: int = 1,
    ) -> None:
        """`workers`: how many share the sidecar's budgets (connections, pool, buffers)."""
        self.settings = settings
        self.index = index
        self.listen = listen
        self.store = Store()
        attributes = parse_attributes(settings.attribute)
        caps = [SharedCap(shared, OTHER) for shared in attribute_slots]
        attribution = Attribution(attributes, settings.max_attribute_values, caps)
        recorder = Recorder(
            self.store,
            slots,
            SLO(ttft=settings.slo_ttft, tpot=settings.slo_tpot, e2e=settings.slo_e2e),
            attribution,
            load_prices(settings.prices) if settings.prices is not None else None,
        )
        # Sidecar-wide budgets are split evenly among the workers.
        client = UpstreamClient(
            pool_size=share(settings.upstream_pool_size, workers),
            pool_timeout=settings.upstream_pool_timeout,
            head_max_bytes=settings.upstream_head_max_bytes,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            total_timeout=settings.upstream_timeout,
        )
        self.tracing = None
        if settings.otlp_endpoint is not None or enabled_by_environment(os.environ):
            from infermeter.tracing import make_tracing  # the SDK only when tracing is on

            self.tracing = make_tracing(settings, settings.upstream)
        strip = attribution.headers if settings.strip_attribute_headers else frozenset()
        self.proxy = ProxyApp(
            settings.upstream,
            client,
            recorder,
            tracing=self.tracing,
            strip_headers=strip,
            buffer_budget=share(settings.request_buffer_max_bytes, workers),
        )
        worker = str(index)
        self.lag = self.store.live(m.EVENT_LOOP_LAG).labels(worker)
        self.tasks = self.store.live(m.EVENT_LOOP_TASKS).labels(worker)
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        wanted = share(settings.max_connections, workers)
        connections = proxy_connection_budget(
            wanted,
            FD_LIMIT_CAP if fd_limit == resource.RLIM_INFINITY else fd_limit,
            0,  # the metrics port is the supervisor's, with its own files
        )
        if connections < wanted:
            log.warning(
                "max_connections lowered to fit the open-file limit",
                extra={"worker": index, "max_connections": connections, "open_files": fd_limit},
            )
        rejected = counting(self.store.live(m.HTTP_REJECTED), "proxy")
        config = uvicorn.Config(
            self.proxy,
            loop="none",  # we own the loop
            http=guarded_protocol(
                settings_limits(settings, connections), rejected, eager=self.proxy.eager
            ),
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
        self.server = ProxyServer(config)
        logging.getLogger("uvicorn.error").addFilter(HideAbortedStreams())
        self._declared = 0
        self._transport: asyncio.WriteTransport | None = None

    def _send(self, message: Any) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(encode(message))

    def snapshot(self) -> None:
        """Hand over what changed: cheap (the touched series only), never blocks."""
        decls = self.store.declarations()
        new, self._declared = decls[self._declared :], len(decls)
        self._send(("snap", [tuple(d) for d in new], self.store.take()))

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            try:
                self.snapshot()
            except Exception:  # a bug here must not end the hand-overs for good
                log.exception("snapshot failed", extra={"worker": self.index})

    async def _announce_ready(self, own_process: bool) -> None:
        while not self.server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.01)
        if own_process:
            # Everything made so far (modules, settings, the app) lives as long as the
            # process: out of the collector's sight, a full collection walks only what
            # requests made.
            gc.collect()
            gc.freeze()
        self.snapshot()
        self._send(("ready",))

    async def run(self, channel: socket.socket, stop: asyncio.Event | None = None) -> int:
        """`stop`: None in a worker process (SIGTERM and SIGINT drain it); given, the worker
        runs on a thread of another process (the tests' in-process sidecar), whose signal
        handlers and garbage collector are not the worker's to take."""
        loop = asyncio.get_running_loop()
        own_process = stop is None
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        transport, protocol = await loop.create_connection(lambda: _Channel(stop), sock=channel)
        self._transport = transport
        self._send(("hello", os.getpid()))
        serving = asyncio.create_task(self.server.serve(sockets=[self.listen]))
        helpers = [
            asyncio.create_task(watch_lag(self.lag, self.tasks)),
            asyncio.create_task(self._snapshots()),
            asyncio.create_task(self._announce_ready(own_process)),
        ]
        try:
            await asyncio.wait(
                [serving, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            # Stop accepting now: uvicorn would notice should_exit only on its next tick.
            self.server.stop_accepting()
            self.listen.close()
            self._send(("draining",))  # the supervisor turns /readyz 503 after this
            log.info(
                "draining", extra={"worker": self.index, "timeout": self.settings.drain_timeout}
            )
            self.proxy.draining = True
            self.server.should_exit = True  # wait for open requests, then exit
            await serving
            if self.proxy.drain_aborted:
                log.warning(
                    "drain timeout: open requests were ended",
                    extra={"requests": self.proxy.drain_aborted},
                )
        finally:
            for task in helpers:
                task.cancel()
            self.snapshot()
            self._send(("bye", self.proxy.drain_aborted))
            transport.close()  # flushes what is buffered first
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), 5)
            if self.tracing is not None:  # after the hand-over: the figures go first
                await asyncio.to_thread(self.tracing.shutdown)  # the last spans, bounded
        return 0


def make_worker(
    settings: WorkerConfig, index: int, of: int, listen: socket.socket, tables: Sequence[int]
) -> Worker:
    """Worker `index` of `of` over the shared tables' descriptors: the model slots, then
    one table per `--attribute`."""
    slots = ModelSlots(tables[0], settings.max_models, fixed=bool(settings.models))
    attribute_slots = [ModelSlots(fd, settings.max_attribute_values) for fd in tables[1:]]
    return Worker(settings, index, listen, slots, attribute_slots, of)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infermeter-worker")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--of", type=int, default=1, help="workers in all")
    parser.add_argument(
        "--slots-fd",
        required=True,
        help="comma-separated: the model slots, then one table per --attribute",
    )
    args = parser.parse_args(argv)
    channel = socket.socket(fileno=args.channel_fd)
    settings = read_settings(channel)
    from infermeter import logs

    logs.configure(settings.log_format, settings.log_level)
    raise_fd_limit()
    listen = socket.socket(fileno=args.listen_fd)
    fds = [int(fd) for fd in args.slots_fd.split(",")]
    worker = make_worker(settings, args.index, args.of, listen, fds)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(worker.run(channel))


if __name__ == "__main__":
    sys.exit(main())
