"""Run the real `infermeter serve` as a subprocess on loopback and read what it exports."""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from harness import http_client

T = TypeVar("T")
#: Environment every sidecar of this test session gets (a fixture may set
#: INFERMETER_WORKERS here to run a whole module against several workers).
SIDECAR_ENV: dict[str, str] = {}
INFERMETER = str(Path(sys.executable).with_name("infermeter"))
#: How long a started process may take to answer: only bounds a hang, so generous (tests
#: share the machine's cores with other xdist workers and their processes).
READY_TIMEOUT = 30.0


def free_port() -> int:
    return free_ports(1)[0]


#: Ports a process hands out for servers it starts later: a block of its own per xdist
#: worker, below the kernel's ephemeral range (32768-60999 by default), taken in turn.
#: A port from `bind(("127.0.0.1", 0))` is free only until it is released: another xdist
#: worker's next `bind(0)` (or a client's connection) may get it before the server this
#: process meant it for binds it, and then a test talks to another test's server (seen:
#: a request went to another worker's sidecar, which traced it under its own trace).
PORT_BASE, PORT_BLOCK, EPHEMERAL_START = 20_000, 800, 32_768
PORT_BLOCKS = (EPHEMERAL_START - PORT_BASE) // PORT_BLOCK  # 15: xdist workers beyond share
_next_port = os.getpid() * 97  # where in the block: a child process (bench.run) starts elsewhere


def _port_block() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    start = PORT_BASE + (int(worker) if worker.isdigit() else 0) % PORT_BLOCKS * PORT_BLOCK
    return range(start, start + PORT_BLOCK)


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free now, from this process's block (above), each
    one handed out again only after the whole block was: bound all at once to check them."""
    global _next_port
    block = _port_block()
    found: list[int] = []
    with ExitStack() as stack:
        for _ in range(len(block)):
            port = block[_next_port % len(block)]
            _next_port += 1
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use (by this run or anything else on the machine)
                continue
            found.append(port)
            if len(found) == count:
                return found
    raise AssertionError(f"no {count} free ports in {block}")


def wait_for(check: Callable[[], T | None], timeout: float = 15.0, what: str = "") -> T:
    """Poll until check() returns something truthy; the assertion is on the value, not time."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}: last={last!r}")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    want = set(labels.items())
    for (sample, sample_labels), v in samples(text).items():
        if sample == name and want <= set(sample_labels):
            return v
    return None


class SidecarClient:
    """What a test asks of a running sidecar, a process (`Sidecar`) or on threads of the
    test process (`harness.inprocess.InProcessSidecar`)."""

    def __init__(self, port: int, log: Path, proxy_port: int | None) -> None:
        self.port = port
        self.log_path = log
        self.url = f"http://127.0.0.1:{port}"
        self.proxy_url = f"http://127.0.0.1:{proxy_port}" if proxy_port else ""

    def exit_code(self) -> int | None:
        """None while the sidecar runs."""
        raise NotImplementedError

    def stop(self) -> int:
        raise NotImplementedError

    def get(self, path: str, **headers: str) -> httpx.Response:
        return http_client.get(self.url + path, headers=headers, timeout=5)

    def metrics(self, *names: str, fresh: bool = True) -> str:
        """The exposition; with names, only those families (prometheus_client's name[]).

        `fresh`: once every proxy worker has handed its figures over after this call began
        (they do every 0.25 s), so it includes what the test did just before."""
        if fresh:
            self.handed_over()
        query = "&".join(f"name[]={name}" for name in names)
        response = self.get("/metrics" + ("?" + query if query else ""))
        response.raise_for_status()
        return response.text

    def handed_over(self) -> None:
        """Wait until each worker's last hand-over is younger than this call (a worker
        silent for over 2 s already, stopped by the test, is not waited for)."""
        start = time.monotonic()
        age_name = "infermeter_worker_snapshot_age_seconds"
        stuck: set[frozenset[tuple[str, str]]] | None = None

        def check() -> bool:
            nonlocal stuck
            elapsed = time.monotonic() - start  # before the scrape: a conservative bound
            response = self.get(f"/metrics?name[]={age_name}")
            response.raise_for_status()
            ages = {ls: v for (n, ls), v in samples(response.text).items() if n == age_name}
            if stuck is None:
                stuck = {ls for ls, age in ages.items() if age > 2.0}
            return all(age < elapsed for ls, age in ages.items() if ls not in stuck)

        wait_for(check, what="a hand-over from every worker")

    def log(self) -> str:
        return self.log_path.read_text()

    #: What it is, in messages, and what answers 200 once it is ready.
    kind, ready_path = "sidecar", "/readyz"

    def wait_ready(self) -> None:
        def ready() -> bool:
            code = self.exit_code()
            if code is not None:
                raise AssertionError(f"{self.kind} exited {code}:\n{self.log()}")
            try:
                return self.get(self.ready_path).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, READY_TIMEOUT, f"{self.kind}: {self.ready_path}")

    def wait_metric(
        self,
        name: str,
        expected: float | None,
        timeout: float = 15,
        only: tuple[str, ...] = (),
        **labels: str,
    ) -> str:
        """Scrape until the sample has the expected value (None: until it is absent).

        `only`: scrape just these sample names and `name` (faster with many series)."""

        def check() -> str | None:
            text = self.metrics(*((name, *only) if only else ()), fresh=False)
            return text if value(text, name, **labels) == expected else None

        wait_for(check, timeout, f"{name}{labels} == {expected}")
        # and every worker's other figures too, handed over since (the test asserts on them)
        return self.metrics(*((name, *only) if only else ()))


class Sidecar(SidecarClient):
    """The real `infermeter serve` process."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, log: Path, proxy_port: int | None
    ) -> None:
        super().__init__(port, log, proxy_port)
        self.proc = proc

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> int:
        return terminate(self.proc)

    def worker_pids(self) -> list[int]:
        """The proxy worker processes, oldest first."""
        children = psutil.Process(self.proc.pid).children()
        workers = [c for c in children if "infermeter.worker" in " ".join(c.cmdline())]
        return [c.pid for c in sorted(workers, key=lambda c: c.create_time())]


@contextmanager
def run_sidecar(
    tmp_path: Path,
    *args: str,
    lib_dir: Path | None = None,
    nvml_state: Path | None = None,
    env: dict[str, str] | None = None,
    ready: bool = True,
    upstream: str | None = None,
    prefix: tuple[str, ...] = (),
    open_files: int | None = None,
) -> Iterator[Sidecar]:
    """The real sidecar; with `upstream`, its proxy listens on a free loopback port.

    `prefix`: a command to run it under (e.g. taskset); `open_files`: its soft and hard
    limit on open files (as a container runtime may set)."""
    port, listen = free_ports(2)
    proxy_port = None
    if upstream is not None:
        proxy_port = listen
        args = ("--upstream", upstream, "--listen", f"127.0.0.1:{proxy_port}", *args)
    # FAKE_NVML_CONFIG from `nvml_state` alone: the test process's own (an in-process
    # sidecar's, while one runs) is not this sidecar's state
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("INFERMETER_") and k != "FAKE_NVML_CONFIG"
    }
    environ["LD_LIBRARY_PATH"] = str(lib_dir) if lib_dir else str(tmp_path / "no-nvml-here")
    if nvml_state is not None:
        environ["FAKE_NVML_CONFIG"] = str(nvml_state)
    environ.update(SIDECAR_ENV)
    environ.update(env or {})
    log = tmp_path / f"sidecar-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*prefix, INFERMETER, "serve", "--metrics-listen", f"127.0.0.1:{port}", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=None if open_files is None else partial(_limit_files, open_files),
        )
    sidecar = Sidecar(proc, port, log, proxy_port)
    with serving(sidecar, ready):
        yield sidecar


@contextmanager
def serving(sidecar: SidecarClient, ready: bool) -> Iterator[None]:
    """A started sidecar, ready if asked, stopped at the end of the block whatever happens."""
    try:
        if ready:
            sidecar.wait_ready()
        yield
    finally:
        sidecar.stop()


def _limit_files(count: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@contextmanager
def demo_upstream(tmp_path: Path, *args: str) -> Iterator[str]:
    """The packaged synthetic upstream (`infermeter demo-upstream`) as a real process."""
    port = free_port()
    log = tmp_path / f"demo-upstream-{port}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [INFERMETER, "demo-upstream", "--listen", f"127.0.0.1:{port}", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"demo upstream exited:\n{log.read_text()}")
        try:
            return http_client.get(url + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, READY_TIMEOUT, "demo upstream")
        yield url
    finally:
        terminate(proc)


def terminate(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then SIGKILL after 10 s: a test never leaves a process behind."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@contextmanager
def process(args: list[str], log: Path) -> Iterator[None]:
    """A background process (Prometheus, Alertmanager...) for the block, output into `log`."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        terminate(proc)


def read_until_cut(url: str, body: object) -> tuple[bytes, BaseException | None]:
    """POST a streaming request; return what arrived and the error that ended it, if any."""
    received: list[bytes] = []
    try:
        with http_client.stream("POST", url, json=body, timeout=10) as response:
            received.extend(response.iter_raw())
    except httpx.HTTPError as exc:
        return b"".join(received), exc
    return b"".join(received), None


def stable_exposition(text: str, volatile: re.Pattern[str]) -> str:
    """An exposition for a golden file: every HELP/TYPE line, but no sample line whose
    value depends on the machine or the moment (names matching `volatile`)."""
    return "".join(
        line + "\n"
        for line in text.splitlines()
        if line.startswith("#") or not volatile.match(line)
    )
