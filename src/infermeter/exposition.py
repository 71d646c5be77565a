"""The metrics server: /metrics, /healthz, /readyz on their own port, in the supervisor.

It runs on the supervisor's event loop; the proxy workers are other processes, so rendering
an exposition never runs on (and never stalls) a loop that times user traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import Callable, Iterator
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


def metrics_app(render: Render) -> ASGIApp:
    """/metrics: content negotiation, `name[]` filters and gzip, as prometheus_client does."""

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
        body = render(openmetrics, names)
        out = [(b"content-type", content_type.encode())]
        if "gzip" in headers.get("accept-encoding", "").lower():
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            out.append((b"content-encoding", b"gzip"))
        out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": body})

    return app


def build_app(render: Render, readiness: Readiness, auth: MetricsAuth | None = None) -> Starlette:
    metrics = metrics_app(render)

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
    ):
        self.address = address
        config = uvicorn.Config(
            build_app(render, readiness, auth),
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
