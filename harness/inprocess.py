"""The real sidecar on threads of the test process: `infermeter serve` without its processes.

The supervisor (`infermeter.app.Sidecar`: metrics port, merger, render thread) runs on an
event loop of its own in a background thread, and each proxy worker is a real
`infermeter.worker.Worker` on a thread and event loop of its own, started by the pool
through its `spawn` seam. They talk over the same socketpair channel, accept on the same
listening socket and share the same model-slot tables (duplicated descriptors, as a child
process would inherit them), on real loopback ports. What is left out is the process: a
start costs a few milliseconds of CPU instead of two interpreters' imports.

Process-global state, and how it is kept apart:
- logs: one handler on the root logger per sidecar, in the sidecar's format, into its own
  file; it takes the lines logged on the sidecar's own threads (supervisor and workers),
  and `infermeter.*` lines from helper threads (render, engine fetch) of any sidecar
  running at the time, and the OpenTelemetry SDK's own lines (`opentelemetry.*`, from its
  export threads). The root logger gets the sidecar's level (the lowest of those
  running) while one runs, and its old level back after;
- tracing (`--otlp-endpoint` and its options): each worker builds its own TracerProvider,
  MeterProvider and OTLP exporters (`infermeter.tracing`), never the global ones (the
  global propagator is only read), and shuts them and their export threads down when it
  stops; the SDK's fork hooks (weak references) stay registered, as they cannot be removed;
- NVML: one fake library per test process (`lib_dir`, `harness/fake_nvml`), loaded by its
  absolute path before pynvml loads anything: glibc then gives pynvml's own
  `CDLL("libnvidia-ml.so.1")` that library by its SONAME, and it stays loaded for the life
  of the process. The state file (`nvml_state`) is switched per sidecar: FAKE_NVML_CONFIG in
  os.environ while it runs, which the fake reads at each nvmlInit. Without `lib_dir`,
  `--no-gpu-metrics` only. Another build of the fake (old driver, symbols left out), or a
  library pynvml loaded already, needs a process of its own: `NvmlLibraryConflict`;
- no environment but `INFERMETER_*` settings (read from a dict, never from os.environ) and
  what the code reads from os.environ, set there while the sidecar runs: the SDK's export
  pacing (`OTEL_PACING`), dcgm-exporter's `NODE_NAME` and the fake NVML's
  FAKE_NVML_CONFIG. Sidecars running at once must agree on them (one environment). The
  standard OTEL_* variables that switch tracing on are a process's environment: tests of
  them run a process;
- signal handlers and `gc.freeze()` stay the test process's (`Worker.run(stop=...)`);
- each sidecar has its own prometheus_client registry; `disable_created_metrics()` is
  global and stays set, as the unit tests of the renderer set it anyway.

Tests that need the process itself (signals, exit codes, workers' pids, rlimits, TLS
upstreams, tracing switched on by the environment, an NVML library other than the standard
fake, or none at all) use `harness.sidecar.run_sidecar`.
`inprocess_demo_upstream` is the demo upstream on a thread, for tests that bound its delays
only from below.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from harness.fake_nvml.build import LIBRARY_NAME
from harness.sidecar import READY_TIMEOUT, SIDECAR_ENV, SidecarClient, free_ports, serving
from infermeter import __version__, app, logs
from infermeter.channel import read_settings
from infermeter.cli import build_parser
from infermeter.net import StartupError
from infermeter.proxy.errors import HideAbortedStreams
from infermeter.runtime import loop_factory
from infermeter.settings import Settings, load_settings
from infermeter.supervisor import WorkerProcess
from infermeter.worker import Worker, make_worker

if TYPE_CHECKING:  # imported when a test asks for the demo upstream (aiohttp: ~0.3 CPU-s)
    from infermeter.demo.upstream import DemoConfig

log = logging.getLogger("infermeter.inprocess")
#: The OpenTelemetry SDK's export pacing (tests shorten it), which it reads from os.environ
#: when a worker builds its exporters.
OTEL_PACING = frozenset({"OTEL_BSP_SCHEDULE_DELAY", "OTEL_METRIC_EXPORT_INTERVAL"})
#: The variables but INFERMETER_* run_inprocess takes in `env`: read from os.environ by the
#: code (the SDK's pacing; `NODE_NAME`, dcgm-exporter's Hostname), so set there while it runs.
PROCESS_ENVIRON = OTEL_PACING | {"NODE_NAME"}
#: The fake NVML's state file variable, set from `nvml_state`.
NVML_STATE = "FAKE_NVML_CONFIG"
#: How long stop() waits for the supervisor thread (drain timeout and exit grace are the
#: sidecar's own bounds; this only bounds a hang).
STOP_TIMEOUT = 60.0


class ThreadWorker:
    """A proxy worker on a thread: `asyncio.subprocess.Process`'s part the pool uses.

    SIGTERM (or SIGINT) sets the worker's stop event, as its signal handlers would; kill()
    cancels it. Its descriptors are duplicates of the supervisor's, closed when it ends,
    as a process's would be at exit."""

    def __init__(
        self,
        register: Callable[[], None],
        index: int,
        of: int,
        listen: socket.socket,
        channel: socket.socket,
        tables: Sequence[int],
    ) -> None:
        """`register`: called first thing on the worker's thread (its log lines); the rest
        are `SpawnWorker`'s arguments."""
        self.pid = os.getpid()
        self._register = register
        self.returncode: int | None = None
        self.index = index
        self._of = of
        self._listen = listen.dup()
        self._channel = channel.dup()
        self._tables = [os.dup(fd) for fd in tables]
        self._supervisor = asyncio.get_running_loop()
        self._done: asyncio.Future[int] = self._supervisor.create_future()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[Any] | None = None
        self._stop_asked = self._kill_asked = False
        self.thread = threading.Thread(
            target=self._run, name=f"infermeter-worker-{index}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        self._register()
        code = 1
        try:
            settings = read_settings(self._channel)  # blocks until the pool sends them
            worker = make_worker(settings, self.index, self._of, self._listen, self._tables)
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                code = runner.run(self._main(worker))
        except asyncio.CancelledError:
            code = -signal.SIGKILL  # kill(): as a process killed would report
        except BaseException:  # a process would die of it; the pool sees the exit code
            log.exception("worker thread failed", extra={"worker": self.index})
        finally:
            self._listen.close()
            self._channel.close()
            for fd in self._tables:
                os.close(fd)
            with self._lock:
                self._loop = None
            with contextlib.suppress(RuntimeError):  # the supervisor's loop is gone
                self._supervisor.call_soon_threadsafe(self._finish, code)

    async def _main(self, worker: Worker) -> int:
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._task = asyncio.current_task()
            if self._stop_asked:
                self._stop.set()
            if self._kill_asked:
                raise asyncio.CancelledError
        return await worker.run(self._channel, self._stop)

    def _finish(self, code: int) -> None:
        self.returncode = code
        if not self._done.done():
            self._done.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def send_signal(self, sig: int, /) -> None:
        if sig not in (signal.SIGTERM, signal.SIGINT):
            raise ValueError(f"a thread worker takes SIGTERM or SIGINT, not {sig}")
        with self._lock:
            self._stop_asked = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)

    def kill(self) -> None:
        with self._lock:
            self._kill_asked = True
            if self._loop is not None and self._task is not None:
                self._loop.call_soon_threadsafe(self._task.cancel)


# --- logs ---------------------------------------------------------------------------------
class _SidecarLog(logging.Filter):
    """Lets through a sidecar's own lines: those of its threads, and `infermeter.*` and
    `opentelemetry.*` lines of helper threads (render, engine fetch, OTLP export), which no
    sidecar owns alone."""

    def __init__(self, threads: set[int]) -> None:
        super().__init__()
        self.threads = threads

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread in self.threads:
            return True
        if record.thread is not None and record.thread in _OWNED:
            return False  # another sidecar's thread
        return record.name.split(".", 1)[0] in ("infermeter", "opentelemetry")


_OWNED: set[int] = set()  # threads of every in-process sidecar running
_running: list[tuple[logging.Handler, int]] = []  # each sidecar's handler and level
_root_level: list[int] = []  # the root logger's level before the first of them
_logs_lock = threading.Lock()  # guards the above, and the two below
_environs: list[dict[str, str]] = []  # each running sidecar's os.environ values
_environ_before: dict[str, str | None] = {}  # os.environ's, before the first of them
_nvml_library: list[Path] = []  # the fake NVML this process loaded, once


def _set_root_level() -> None:
    """The lowest level of the sidecars running (a process's root logger has its own),
    or the level from before."""
    root = logging.getLogger()
    if _running:
        _root_level[:] = _root_level or [root.level]
        root.setLevel(min(level for _, level in _running))
    elif _root_level:
        root.setLevel(_root_level.pop())


def _attach(handler: logging.Handler, level: int) -> None:
    with _logs_lock:
        _running.append((handler, level))
        _set_root_level()
        logging.getLogger().addHandler(handler)


def _detach(handler: logging.Handler) -> None:
    with _logs_lock:
        logging.getLogger().removeHandler(handler)
        _running[:] = [(h, level) for h, level in _running if h is not handler]
        _set_root_level()
        # every worker adds one (equivalent) filter to this global logger: keep one
        uvicorn_error = logging.getLogger("uvicorn.error")
        hiding = [f for f in uvicorn_error.filters if isinstance(f, HideAbortedStreams)]
        for extra in hiding[1:]:
            uvicorn_error.removeFilter(extra)


@contextmanager
def _process_environ(values: dict[str, str]) -> Iterator[None]:
    """`values` (PROCESS_ENVIRON and NVML_STATE variables) in os.environ for the block;
    sidecars running at once must agree on them (one environment), and the old values are
    back after the last."""
    if not values:
        yield
        return
    with _logs_lock:
        if _environs and any(os.environ.get(name) != value for name, value in values.items()):
            raise ValueError(f"another in-process sidecar runs with another environment: {values}")
        for name, value in values.items():
            _environ_before.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _environs.append(values)
    try:
        yield
    finally:
        with _logs_lock:
            _environs.remove(values)
            if not _environs:
                for name, before in _environ_before.items():
                    if before is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = before
                _environ_before.clear()


# --- NVML ---------------------------------------------------------------------------------
class NvmlLibraryConflict(RuntimeError):
    """This process holds another NVML library than the one asked for: glibc keeps a loaded
    library, and pynvml the first it loaded, for the life of the process."""


def load_fake_nvml(lib_dir: Path) -> Path:
    """Load `lib_dir`'s fake libnvidia-ml.so.1 into this process, once; its path.

    Loaded by absolute path before pynvml loads anything, it is what glibc then hands
    pynvml's own `CDLL("libnvidia-ml.so.1")` (no slash: an object already loaded under that
    SONAME is reused), without LD_LIBRARY_PATH, which glibc reads only at process start."""
    import pynvml  # the bindings infermeter uses; importing them loads no library

    library = (lib_dir / LIBRARY_NAME).resolve()
    with _logs_lock:
        if _nvml_library:
            if _nvml_library[0] != library:
                raise NvmlLibraryConflict(
                    f"this test process has loaded the fake NVML {_nvml_library[0]} already, and"
                    f" cannot load {library} (a library stays loaded): run this sidecar as a"
                    " process, with harness.sidecar.run_sidecar"
                )
            return library
        if pynvml.nvmlLib is not None:
            raise NvmlLibraryConflict(
                f"pynvml has loaded an NVML library in this process already ({pynvml.nvmlLib})"
                f" and would keep it rather than {library}: run this sidecar as a process, with"
                " harness.sidecar.run_sidecar"
            )
        loaded = ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
        # what pynvml will get: another libnvidia-ml.so.1 loaded earlier would come first
        if ctypes.CDLL(LIBRARY_NAME)._handle != loaded._handle:
            raise NvmlLibraryConflict(
                f"another {LIBRARY_NAME} is loaded in this process already, and pynvml would"
                f" get it rather than {library}: run this sidecar with harness.sidecar.run_sidecar"
            )
        _nvml_library.append(library)
        return library


# --- the sidecar --------------------------------------------------------------------------
class InProcessSidecar(SidecarClient):
    """`infermeter serve` with the settings `settings`, on threads of this process.

    `nvml`: the fake NVML is loaded (load_fake_nvml), so the GPU poller may run."""

    def __init__(
        self, settings: Settings, port: int, log: Path, proxy_port: int | None, nvml: bool = False
    ) -> None:
        super().__init__(port, log, proxy_port)
        if settings.gpu_metrics and not nvml:
            raise ValueError(
                "an in-process sidecar reads GPUs from the fake NVML only (lib_dir=...);"
                " else it runs with --no-gpu-metrics"
            )
        self.settings = settings
        self.returncode: int | None = None
        self.workers: list[ThreadWorker] = []
        self._threads: set[int] = set()
        self._sink: IO[str] = log.open("a", encoding="utf-8")
        self._handler = logs.make_handler(settings.log_format, self._sink)
        self._handler.addFilter(_SidecarLog(self._threads))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._serve, name="infermeter-supervisor", daemon=True
        )

    def start(self) -> None:
        _attach(self._handler, logging.getLevelName(self.settings.log_level.upper()))
        self._thread.start()
        self._started.wait()

    def exit_code(self) -> int | None:
        return None if self._thread.is_alive() else self.returncode

    def _own_thread(self) -> None:
        ident = threading.get_ident()
        self._threads.add(ident)
        _OWNED.add(ident)

    def _serve(self) -> None:
        self._own_thread()
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                self.returncode = runner.run(self._main())
            app.log.info("stopped")
        except StartupError as exc:
            self._sink.write(f"infermeter: {exc}\n")
            self.returncode = 1
        except Exception:  # a process would die of it; stop() reports the exit code
            log.exception("in-process sidecar failed")
            self.returncode = 1
        finally:
            self._started.set()
            for worker in self.workers:
                worker.thread.join(STOP_TIMEOUT)

    async def _main(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        sidecar = app.Sidecar(self.settings, spawn=self._spawn)
        app.log.info(
            "infermeter starting",
            extra={"version": __version__, "metrics": str(self.settings.metrics_listen)},
        )
        try:
            return await sidecar.serve(self._stop)
        finally:
            # a process would close these at exit: the shared tables and the render thread
            tables = [sidecar.slots] if sidecar.slots is not None else []
            if sidecar.pool is not None:
                tables += sidecar.pool.attribute_slots
            for table in tables:
                table.close()
            sidecar.metrics_server.render_thread.close(wait=True)

    async def _spawn(self, *where: Any) -> WorkerProcess:
        """The pool's `SpawnWorker` (`where`: its arguments): a thread, not a process."""
        worker = ThreadWorker(self._own_thread, *where)
        self.workers.append(worker)
        return worker

    def stop(self) -> int:
        """As SIGTERM would: drain, stop the workers, then return the exit code."""
        if self._stopped:
            return self.returncode if self.returncode is not None else 0
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                raise AssertionError(f"in-process sidecar did not stop:\n{self.log()}")
        self._stopped = True
        _detach(self._handler)
        _OWNED.difference_update(self._threads)
        self._handler.close()
        self._sink.close()
        return self.returncode if self.returncode is not None else 0


def parse_serve(args: Sequence[str], environ: dict[str, str]) -> Settings:
    """`infermeter serve ARGS` read as the command line would, with `environ` for the
    environment (INFERMETER_* settings)."""
    values = vars(build_parser(for_serve=True).parse_args(["serve", *args]))
    values.pop("command")
    config_path = values.pop("config", None)
    return load_settings(values, environ, config_path=config_path)


@contextmanager
def run_inprocess(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready: bool = True,
    upstream: str | None = None,
    lib_dir: Path | None = None,
    nvml_state: Path | None = None,
) -> Iterator[InProcessSidecar]:
    """`harness.sidecar.run_sidecar`, in-process: the same arguments (but those of a process:
    prefix, rlimits) and the same sidecar interface; `env`: INFERMETER_* settings and
    PROCESS_ENVIRON only. `lib_dir`: the fake NVML's directory, loaded into this process
    once (load_fake_nvml: one such library per process); `nvml_state`: its state file."""
    port, listen = free_ports(2)
    proxy_port = None
    if upstream is not None:
        proxy_port = listen
        args = ("--upstream", upstream, "--listen", f"127.0.0.1:{proxy_port}", *args)
    environ = {**SIDECAR_ENV, **(env or {})}
    process = {name: value for name, value in environ.items() if name in PROCESS_ENVIRON}
    foreign = [n for n in environ if not n.startswith("INFERMETER_") and n not in process]
    if foreign:
        raise ValueError(
            f"an in-process sidecar reads only INFERMETER_* and {sorted(PROCESS_ENVIRON)}:"
            f" {foreign}"
        )
    if nvml_state is not None:
        if lib_dir is None:
            raise ValueError("nvml_state is the fake NVML's state: give its lib_dir too")
        process[NVML_STATE] = str(nvml_state)
    if lib_dir is not None:
        load_fake_nvml(lib_dir)
    settings = parse_serve(["--metrics-listen", f"127.0.0.1:{port}", *args], environ)
    sidecar = InProcessSidecar(
        settings, port, tmp_path / f"sidecar-{port}.log", proxy_port, nvml=lib_dir is not None
    )
    with _process_environ(process):
        sidecar.start()
        with serving(sidecar, ready):
            yield sidecar


@contextmanager
def inprocess_demo_upstream(config: DemoConfig | None = None) -> Iterator[str]:
    """`harness.sidecar.demo_upstream` on a thread of this process: the same aiohttp app
    (`infermeter.demo.upstream.make_app`, default settings as the command's), on a loopback
    port and an event loop of its own; its URL. A start costs milliseconds instead of an
    interpreter's imports. Its delays share the test process's GIL: fine for lower bounds
    (never early), not for timing accuracy (`test_proxy_accuracy` keeps a process). Its
    log lines go to no sidecar's log, as a process's would not."""
    from aiohttp import web

    from infermeter.demo.upstream import DemoConfig, make_app

    sock = socket.create_server(("127.0.0.1", 0))
    runner = web.AppRunner(make_app(config or DemoConfig()), shutdown_timeout=1.0)
    loop = (loop_factory() or asyncio.new_event_loop)()
    thread = threading.Thread(target=loop.run_forever, name="demo-upstream", daemon=True)
    thread.start()
    assert thread.ident is not None
    _OWNED.add(thread.ident)

    async def start() -> None:
        await runner.setup()
        await web.SockSite(runner, sock).start()

    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(READY_TIMEOUT)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(STOP_TIMEOUT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT)
        _OWNED.discard(thread.ident)
        loop.close()
        sock.close()
