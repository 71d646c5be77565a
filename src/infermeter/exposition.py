"""The metrics server: /metrics, /healthz, /readyz on their own port, in the supervisor.

It runs in the supervisor; the proxy workers are other processes, so rendering an exposition
never runs on (and never stalls) a loop that times user traffic. The render itself runs on
one thread of its own at a lower CPU priority (`RENDER_NICE`): where the supervisor and the
workers compete for the same cores, the kernel gives them to the workers first, and a
scrape costs the streams as little as it can.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import uvicorn
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from infermeter.metrics_auth import MetricsAuth, RequireAuth
from infermeter.net import bind
from infermeter.settings import HostPort

log = logging.getLogger(__name__)
Readiness = Callable[[], tuple[bool, str]]
#: (openmetrics, sample names or None) -> the exposition
Render = Callable[[bool, frozenset[str] | None], bytes]
#: Called on the event loop before each render (state the loop owns is copied there).
Prepare = Callable[[], None]
#: Niceness of the render thread (Linux sets it per thread): the supervisor's other work and
#: the proxy workers keep 0. A scrape then waits for idle CPU rather than taking it.
RENDER_NICE = 10
#: gzip level: 1 compresses a 1.5 MB exposition ~8x in a few ms; 9 (gzip's default) takes
#: tens of milliseconds for a few percent more.
GZIP_LEVEL = 1

_INDEX = """<html><head><title>infermeter</title></head><body><h1>infermeter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a></p></body></html>"""


class _Asgi:
    """Makes Starlette route to a plain ASGI function (it would call a function a view)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def _lower_priority(nice: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as error:  # not Linux, or a seccomp profile without setpriority
        log.debug("render thread keeps its priority", extra={"reason": str(error)})


class RenderThread:
    """Where renders run: one at a time, off the event loop, at `RENDER_NICE`."""

    def __init__(self, nice: int = RENDER_NICE) -> None:
        self._pool = ThreadPoolExecutor(
            1, thread_name_prefix="infermeter-render", initializer=_lower_priority, initargs=(nice,)
        )

    async def run(self, render: Callable[[], bytes]) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._pool, render)

    def close(self, wait: bool = False) -> None:
        """`wait`: until the thread has ended (a process exiting need not; a test does)."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


def _noop() -> None:
    pass


def metrics_app(
    render: Render, prepare: Prepare = _noop, thread: RenderThread | None = None
) -> ASGIApp:
    """/metrics: content negotiation, `name[]` filters and gzip, as prometheus_client does."""
    pool = thread or RenderThread()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = headers[key] + "," + text if key in headers else text
        _, content_type = choose_encoder(headers.get("accept", ""))
        openmetrics = content_type.startswith("application/openmetrics-text")
        params = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        names = frozenset(params["name[]"]) if "name[]" in params else None
        gzipped = "gzip" in headers.get("accept-encoding", "").lower()

        def produce() -> bytes:
            body = render(openmetrics, names)
            return gzip.compress(body, compresslevel=GZIP_LEVEL) if gzipped else body

        prepare()
        body = await pool.run(produce)
        out = [(b"content-type", content_type.encode())]
        if gzipped:
            out.append((b"content-encoding", b"gzip"))
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


def build_app(
    render: Render,
    readiness: Readiness,
    auth: MetricsAuth | None = None,
    prepare: Prepare = _noop,
    thread: RenderThread | None = None,
) -> Starlette:
    metrics = metrics_app(render, prepare, thread)

    async def index(_: Request) -> Response:
        return HTMLResponse(_INDEX)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_: Request) -> Response:
        ready, reason = readiness()
        return PlainTextResponse(reason + "\n", status_code=200 if ready else 503)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", _Asgi(metrics if auth is None else RequireAuth(metrics, auth))),
        ]
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the supervisor owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsServer:
    def __init__(
        self,
        address: HostPort,
        render: Render,
        readiness: Readiness,
        auth: MetricsAuth | None = None,
        tls: tuple[str, str] | None = None,
        protocol: type[asyncio.Protocol] | str = "auto",
        prepare: Prepare = _noop,
    ):
        self.address = address
        self.render_thread = RenderThread()
        config = uvicorn.Config(
            build_app(render, readiness, auth, prepare, self.render_thread),
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=protocol,
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Bind (a busy port fails here, naming the setting) and serve on the running loop."""
        sock = bind("metrics_listen", self.address)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        log.info("metrics server listening", extra={"address": str(self.address)})

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 5)
        self.render_thread.close()
