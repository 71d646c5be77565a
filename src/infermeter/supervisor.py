"""Starts, watches, restarts and drains the proxy workers; merges what they hand over.

Runs on the supervisor's event loop, beside the metrics server: a worker's snapshot is
applied to the `Merger` as it arrives, and a scrape renders the merger, never asking a
worker for anything. A worker's death shows as end-of-file on its channel: its counters
are folded into the merger's retired state, and a fresh worker takes its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from infermeter import metrics as m
from infermeter.accumulators import FamilyDecl
from infermeter.channel import Decoder, settings_frame
from infermeter.merge import Merger
from infermeter.proxy.model_slots import ModelSlots
from infermeter.settings import Settings
from infermeter.worker_config import WorkerConfig

log = logging.getLogger(__name__)
#: Restart delays after quick deaths: 0.1 s doubling to 5 s; reset by a minute alive.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 5.0
STABLE_AFTER = 60.0
#: Beyond the drain timeout, how long a worker may take to exit before it is killed.
EXIT_GRACE = 10.0
#: How long SIGTERM waits for each worker to close its listening socket.
CLOSE_WAIT = 2.0


class WorkerProcess(Protocol):
    """What the pool needs of a running worker: `asyncio.subprocess.Process`, or a stand-in
    (the tests' in-process sidecar runs workers on threads)."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    async def wait(self) -> int: ...
    def send_signal(self, signal: int, /) -> None: ...
    def kill(self) -> None: ...


#: Starts worker `index` of `of` on the listening socket, its end of the channel and the
#: shared tables (their descriptors); the caller closes its copy of the channel end after.
SpawnWorker = Callable[
    [int, int, socket.socket, socket.socket, Sequence[int]], Awaitable[WorkerProcess]
]


async def spawn_process(
    index: int, of: int, listen: socket.socket, channel: socket.socket, tables: Sequence[int]
) -> WorkerProcess:
    """The worker as a child process (`python -m infermeter.worker`) inheriting the sockets."""
    fds = (listen.fileno(), channel.fileno(), *tables)
    command = [
        sys.executable, "-m", "infermeter.worker", "--index", str(index), "--of", str(of),
        "--listen-fd", str(fds[0]), "--channel-fd", str(fds[1]),
        "--slots-fd", ",".join(str(fd) for fd in tables),
    ]  # fmt: skip
    # Its own session: a terminal's Ctrl-C reaches the supervisor only, which then stops
    # the workers in order (a worker draining on its own would look like a crash).
    return await asyncio.create_subprocess_exec(*command, pass_fds=fds, start_new_session=True)


@dataclass
class Slot:
    """One worker position; successive processes in it are successive merger sources."""

    index: int
    proc: WorkerProcess | None = None
    source: int = -1
    ready: bool = False
    last_heard: float = 0.0
    restarts: int = 0
    started: float = 0.0
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class _FromWorker(asyncio.Protocol):
    def __init__(self, pool: WorkerPool, slot: Slot, source: int) -> None:
        self.pool = pool
        self.slot = slot
        self.source = source
        self.decoder = Decoder()

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.decoder.feed(data)
        except (ValueError, EOFError, TypeError) as exc:
            log.error("bad frame from worker", extra={"worker": self.slot.index, "error": str(exc)})
            return
        for message in messages:
            self.pool.handle(self.slot, self.source, message)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.slot.eof.set()


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        count: int,
        listen: socket.socket,
        slots: ModelSlots,
        merger: Merger,
        attribute_slots: list[ModelSlots] | None = None,
        spawn: SpawnWorker = spawn_process,
    ) -> None:
        """`spawn`: how a worker starts (a process but in the tests' in-process sidecar)."""
        self.settings = settings
        self.spawn = spawn
        self.listen = listen
        self.model_slots = slots
        self.attribute_slots = attribute_slots or []
        self.merger = merger
        self.slots = [Slot(i) for i in range(count)]
        self.stopping = False
        self.all_ready_once = False
        self.failed: str | None = None
        self.drain_aborted = 0
        self._sources = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._failure = asyncio.Event()

    # --- messages ------------------------------------------------------------------------
    def handle(self, slot: Slot, source: int, message: Any) -> None:
        kind = message[0]
        slot.last_heard = time.monotonic()
        if kind == "snap":
            _, decls, items = message
            with self.merger.lock:  # the render thread reads the merger
                if decls:
                    self.merger.declare(FamilyDecl(*decl) for decl in decls)
                self.merger.update(source, items)
        elif kind == "ready":
            slot.ready = True
            if all(s.ready for s in self.slots):
                self.all_ready_once = True
        elif kind == "draining":
            slot.closed.set()
        elif kind == "bye":
            self.drain_aborted += int(message[1])

    # --- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(slot)) for slot in self.slots]

    async def wait_failed(self) -> str:
        await self._failure.wait()
        return self.failed or "a worker failed"

    def ready(self) -> bool:
        if not self.all_ready_once:
            return False
        return any(slot.ready for slot in self.slots)

    async def _spawn(self, slot: Slot) -> WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        tables = [self.model_slots.fd, *(shared.fd for shared in self.attribute_slots)]
        proc = slot.proc = await self.spawn(
            slot.index, len(self.slots), self.listen, theirs, tables
        )
        theirs.close()
        ours.sendall(settings_frame(WorkerConfig.from_settings(self.settings)))
        self._sources += 1
        slot.source = self._sources
        slot.ready = False
        slot.eof = asyncio.Event()
        slot.closed = asyncio.Event()
        slot.started = slot.last_heard = time.monotonic()
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _FromWorker(self, slot, slot.source), sock=ours)
        log.info("worker started", extra={"worker": slot.index, "pid": proc.pid})
        return proc

    async def _keep(self, slot: Slot) -> None:
        """Run a worker in the slot until the sidecar stops; restart it when it dies."""
        delay = RESTART_DELAY
        while True:
            proc = await self._spawn(slot)
            await slot.eof.wait()
            slot.closed.set()
            code = await proc.wait()
            was_ready = slot.ready
            slot.ready = False
            with self.merger.lock:
                self.merger.retire(slot.source)
            if self.stopping:
                return
            if not was_ready and not self.all_ready_once:
                self.failed = f"proxy worker {slot.index} exited with code {code} while starting"
                self._failure.set()
                return
            slot.restarts += 1
            log.warning(
                "worker died; restarting",
                extra={"worker": slot.index, "exit_code": code, "restarts": slot.restarts},
            )
            delay = RESTART_DELAY if time.monotonic() - slot.started > STABLE_AFTER else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_MAX)
            if self.stopping:
                return

    async def stop_accepting(self) -> None:
        """SIGTERM every worker; return once each has closed its listening socket."""
        self.stopping = True
        for slot in self.slots:
            if slot.proc is not None and slot.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.send_signal(signal.SIGTERM)
            else:
                slot.closed.set()
        waits = [asyncio.create_task(slot.closed.wait()) for slot in self.slots]
        _, pending = await asyncio.wait(waits, timeout=CLOSE_WAIT)
        for task in pending:  # a stopped or stuck worker: do not hold the drain for it
            task.cancel()

    async def stop(self) -> None:
        """Every worker stops accepting and drains; wait for all to exit."""
        if not self.stopping:
            await self.stop_accepting()
        if not self._tasks:
            return
        deadline = self.settings.drain_timeout + EXIT_GRACE
        _, pending = await asyncio.wait(self._tasks, timeout=deadline)
        for slot in self.slots:
            if pending and slot.proc is not None and slot.proc.returncode is None:
                log.error("worker did not exit in time; killing it", extra={"worker": slot.index})
                slot.proc.kill()
        if pending:
            await asyncio.wait(pending, timeout=5)

    # --- self-metrics --------------------------------------------------------------------
    def collect(self) -> Iterable[Metric]:
        restarts = m.WORKER_RESTARTS.family()
        age = m.WORKER_SNAPSHOT_AGE.family()
        ready = m.WORKERS_READY.family()
        now = time.monotonic()
        for slot in self.slots:
            restarts.add_metric([str(slot.index)], float(slot.restarts))
            age.add_metric([str(slot.index)], max(0.0, now - slot.last_heard))
        ready.add_metric([], float(sum(slot.ready for slot in self.slots)))
        return [ready, restarts, age]

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.returncode is None]
