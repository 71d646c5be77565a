"""The metrics server: /metrics, /healthz, /readyz on their own port, in their own thread.

It runs a separate uvicorn server on a separate event loop so that rendering the exposition
never runs on (and never stalls) the proxy's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app
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

_INDEX = """<html><head><title>infermeter</title></head><body><h1>infermeter</h1>
<p><a href="/metrics">/metrics</a> &middot; <a href="/healthz">/healthz</a> &middot;
<a href="/readyz">/readyz</a></p></body></html>"""


class _Asgi:
    """Makes Starlette route to a plain ASGI function (it would call a function a view)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_app(
    registry: CollectorRegistry, readiness: Readiness, auth: MetricsAuth | None = None
) -> Starlette:
    metrics = make_asgi_app(registry)

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


class MetricsServer:
    def __init__(
        self,
        address: HostPort,
        registry: CollectorRegistry,
        readiness: Readiness,
        auth: MetricsAuth | None = None,
        tls: tuple[str, str] | None = None,
        protocol: type[asyncio.Protocol] | str = "auto",
    ):
        self.address = address
        config = uvicorn.Config(
            build_app(registry, readiness, auth),
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
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        sock = bind("metrics_listen", self.address)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="infermeter-metrics",
            daemon=True,
        )
        self._thread.start()
        log.info("metrics server listening", extra={"address": str(self.address)})

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
