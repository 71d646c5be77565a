"""A yardstick, not a product: the least an HTTP/1.1 reverse proxy in Python can cost here.

uvloop + httptools on both sides, one pooled upstream connection per stream, each response
body chunk re-framed and written as it is parsed: what infermeter's relay does per event,
with nothing measured, no limits, no ASGI and no task per request (the request is written
upstream from the callback that completed it). `python -m bench.proxy_latency --floor`
runs it as one more path beside nginx and infermeter, so the share of infermeter's added
TTFT and CPU that any Python proxy pays is told apart from what infermeter's own design
adds (bench/README.md, issue #15). It assumes well-formed traffic from the bench's load
generator: never put it in front of anything else.

    python -m bench.floor UPSTREAM_HOST UPSTREAM_PORT LISTEN_PORT
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import httptools
import uvloop

from harness.sidecar import free_port, terminate

#: Request headers not copied upstream: the floor writes its own Host and Content-Length.
_DROPPED = frozenset({b"host", b"connection", b"content-length", b"transfer-encoding"})


class Upstream(asyncio.Protocol):
    """One pooled connection to the upstream; relays each response to its client."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        assert self.client is not None
        self.client.write(
            b"HTTP/1.1 %d OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n" % self.parser.get_status_code()
        )

    def on_body(self, body: bytes) -> None:
        assert self.client is not None
        self.client.write(b"%x\r\n%b\r\n" % (len(body), body))

    def on_message_complete(self) -> None:
        assert self.client is not None
        self.client.write(b"0\r\n\r\n")
        self.client = None
        self.parser = httptools.HttpResponseParser(self)
        self.pool.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool.idle:
            self.pool.idle.remove(self)


class Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Upstream] = []
        self.connecting: set[asyncio.Task[None]] = set()

    def send(self, client: asyncio.Transport, request: bytes) -> None:
        """Written at once on an idle connection, else once a new one is open."""
        if self.idle:
            upstream = self.idle.pop()
            upstream.client = client
            assert upstream.transport is not None
            upstream.transport.write(request)
        else:
            task = asyncio.ensure_future(self._connect(client, request))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)

    async def _connect(self, client: asyncio.Transport, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: Upstream(self), self.host, self.port)
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(request)


class Client(asyncio.Protocol):
    """A client connection: each complete request goes upstream from `on_message_complete`."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _DROPPED:
            self.headers.append(b"%b: %b\r\n" % (name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        head = b"%b %b HTTP/1.1\r\nhost: upstream\r\ncontent-length: %d\r\n%b\r\n" % (
            self.parser.get_method(),
            self.url,
            len(body),
            b"".join(self.headers),
        )
        self.headers, self.body = [], []
        assert self.transport is not None
        self.pool.send(self.transport, head + body)


async def serve(upstream_host: str, upstream_port: int, listen_port: int) -> None:
    pool = Pool(upstream_host, upstream_port)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(pool), "127.0.0.1", listen_port)
    print("ready", flush=True)
    await server.serve_forever()


@contextmanager
def floor_proxy(upstream: str) -> Iterator[tuple[int, int]]:
    """(listen port, PID) of the floor in front of `upstream` (http://host:port)."""
    host, _, port = upstream.split("//")[1].partition(":")
    listen = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", host, port, str(listen)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline() != b"ready\n":
            raise RuntimeError(f"bench.floor exited {proc.wait()} before it was ready")
        yield listen, proc.pid
    finally:
        terminate(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    host, port, listen = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    uvloop.install()
    asyncio.run(serve(host, port, listen))


if __name__ == "__main__":
    main()
