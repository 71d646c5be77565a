"""The upstream side: a keep-alive pool of HTTP/1.1 connections, parsed by httptools.

Why not aiohttp's client (which this replaced): on the 2-core benchmark machine its
per-request and per-chunk machinery (request/response objects, a timer re-armed on every
read, a payload registry, a StreamReader with its own buffering) cost as much CPU as the
rest of the proxy together. A proxy needs much less: send a head and a body, parse the
response head, hand over body chunks as they arrive. httptools (llhttp, the parser uvicorn
uses on the client side) does the HTTP parsing; this module does only connection handling.

Bodies pass through untouched: no decompression, no added headers besides Host and the
body framing HTTP/1.1 requires.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools

# vLLM and SGLang run uvicorn with a 5 s keep-alive: drop idle connections before the
# upstream does, or a request can be sent on a connection the upstream is closing.
KEEPALIVE_SECONDS = 4.0
# Response bytes buffered while the client is slower than the upstream; above this the
# upstream socket stops being read (TCP pushes back) until the client catches up.
HIGH_WATER = 256 * 1024
BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# RFC 9110 §9.2.2: these may be sent again after a failure; a POST (a generation) may not.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})

RawHeaders = list[tuple[bytes, bytes]]
Body = bytes | AsyncIterator[bytes | bytearray] | None  # a streamed body: buffers as they come


class UpstreamError(Exception):
    """Base of what the upstream side raises; the proxy maps each to an error category."""


class ConnectError(UpstreamError):
    """No connection: refused, unreachable, DNS, TLS handshake."""


class ConnectTimeout(UpstreamError):
    """The connection was not established within the connect timeout."""


class ReadTimeout(UpstreamError):
    """The upstream stayed silent longer than the read timeout, or the total ran out."""


class Disconnected(UpstreamError):
    """The upstream closed or reset the connection before its response was complete."""


class NotSent(Disconnected):
    """The connection was found closed before any byte of the request was written."""


class HeadTooLarge(Disconnected):
    """The upstream's response head exceeded the limit (nginx: "upstream sent too big
    header"); treated as a broken response."""


class PoolTimeout(UpstreamError):
    """No upstream connection became free within the pool timeout."""


class Response:
    """One response: its head once parsed, then its body chunks as they arrive."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_deadline",
        "_delimited",
        "_done",
        "_error",
        "_head",
        "_head_bytes",
        "_interim",
        "_parser",
        "_waiter",
        "head_only",
        "held",
        "keep_alive",
        "raw_headers",
        "sink",
        "status",
    )

    def __init__(self, conn: _Connection, head_only: bool) -> None:
        self._conn = conn
        self.head_only = head_only
        self.status = 0
        self.raw_headers: RawHeaders = []
        self.keep_alive = False
        self._parser = httptools.HttpResponseParser(self)
        self._head: asyncio.Future[None] = conn.loop.create_future()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self._error: UpstreamError | None = None
        self._delimited = False  # Content-Length or chunked: the end is not the close
        self._interim = False  # a 1xx response, skipped
        self._deadline: asyncio.TimerHandle | None = None  # the total timeout
        self._head_bytes = 0  # bytes read before the head was complete
        # relay mode (see relay()): body chunks go to `sink` as they are parsed
        self.sink: Callable[[bytes], None] | None = None
        self.held = False  # the sink's client is slow: the upstream is not read meanwhile

    def header(self, name: bytes) -> str | None:
        """The first value of a header, by lower-case name."""
        for key, value in self.raw_headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def answered(self) -> bool:
        """The head arrived and nothing failed since."""
        return self._head.done() and self._error is None

    # --- httptools callbacks --------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._done:  # bytes beyond a complete response: never reuse this connection
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()  # once here: header() and the hop-by-hop filter compare lower case
        self.raw_headers.append((name, value))
        if name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._delimited = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: wait for the real one
            self.raw_headers = []
            self._delimited = False
            return
        self.status = status
        size = sum(len(name) + len(value) + 4 for name, value in self.raw_headers)
        if size > self._conn.pool.head_max_bytes:
            self.fail(HeadTooLarge("the upstream sent too big a response head"))
            return
        if not self._head.done():
            self._head.set_result(None)
        if self.head_only:  # HEAD: a Content-Length but no body follows
            self._complete()

    def on_body(self, body: bytes) -> None:
        if self._done:
            return
        if self.sink is not None:
            self.sink(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete()

    # --- events from the connection -------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self._done:  # more bytes after a complete response: the next one is not ours
            self.keep_alive = False
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._done:
                self.keep_alive = False
            else:
                self.fail(Disconnected(f"invalid HTTP from the upstream: {exc}"))
            return
        if not self._head.done() and self._error is None:  # all of `data` was head
            self._head_bytes += len(data)
            if self._head_bytes > self._conn.pool.head_max_bytes:
                self.fail(HeadTooLarge("the upstream sent too big a response head"))

    def eof(self, exc: BaseException | None) -> None:
        if self._done:
            return
        if self._head.done() and not self._delimited and exc is None:
            self._complete()  # the body ran until the close, as HTTP/1.0-style servers do
            return
        self.fail(Disconnected("the upstream closed the connection"))

    def _complete(self) -> None:
        if self._done:
            return
        self._done = True
        self.keep_alive = self._parser.should_keep_alive()
        self._conn.response_complete()
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting any more
        self._wake()
        self._conn.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # --- the consumer side ----------------------------------------------------------------
    async def head(self) -> None:
        self._conn.watch()
        await self._head

    async def read(self) -> bytes:
        """The body bytes that arrived since the last read; b"" once the body is complete."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                self._conn.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            self._conn.watch()
            await self._waiter

    # --- relay mode: no read() and no task wake-up per chunk --------------------------------
    def relay(self, sink: Callable[[bytes], None]) -> None:
        """From now on hand every body chunk to `sink` as the upstream's bytes are parsed,
        synchronously (in the connection's data_received); what is buffered goes first.

        `sink` must not raise. The consumer then awaits `relayed()` for the end of the
        body, and calls `hold()` when its own client cannot take more for now.
        """
        if self._chunks:
            chunks = self._chunks
            data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            sink(data)
        self.sink = sink
        if not self.held:
            self._conn.resume_reading()

    def unrelay(self) -> None:
        """Back to buffering (read()): nothing more goes to the sink."""
        self.sink = None

    def hold(self) -> None:
        """Stop reading the upstream (TCP pushes back) and wake the consumer, which waits
        for its client to drain and then calls `resume()`."""
        if not self.held:
            self.held = True
            self._conn.pause_reading()
            self._wake()

    def resume(self) -> None:
        if self.held:
            self.held = False
            self._conn.resume_reading()

    async def relayed(self) -> bool:
        """Wait for the end of a relayed body: True once complete, False when `hold()` was
        called (the consumer drains its client, then resumes and waits again); raises
        the upstream's failure."""
        while True:
            if self._error is not None:
                raise self._error
            if self._done:
                return True
            if self.held:
                return False
            self._waiter = self._conn.loop.create_future()
            self._conn.watch()
            await self._waiter

    def release(self) -> None:
        """Give the connection back to the pool if the exchange ended cleanly, else close it."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._conn.finish(self)


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_active",
        "_counted",
        "_drain",
        "_paused",
        "_timer",
        "closed",
        "idle_handle",
        "last_activity",
        "loop",
        "pool",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamClient, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.last_activity = loop.time()
        self.idle_handle: asyncio.TimerHandle | None = None
        self._active: Response | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._counted = True  # against the pool size, until closed

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self._active is not None:
            self._active.feed(data)
        else:  # nothing was asked: a broken or confused upstream; never reuse it
            self.close()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._active is not None:
            self._active.eof(exc)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(Disconnected("the upstream closed the connection"))
            self._drain.exception()

    def pause_writing(self) -> None:
        self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    # --- flow control and timeouts --------------------------------------------------------
    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def watch(self) -> None:
        """Arm the read timeout lazily: one timer per timeout period, not one per read."""
        timeout = self.pool.read_timeout
        if timeout and self._timer is None and not self.closed:
            self._timer = self.loop.call_at(self.last_activity + timeout, self._check_silence)

    def _check_silence(self) -> None:
        self._timer = None
        active = self._active
        if active is None or self.closed:
            return
        silent_until = self.last_activity + self.pool.read_timeout
        if self.loop.time() >= silent_until and not self._paused:
            active.fail(ReadTimeout("the upstream was silent for longer than the read timeout"))
        else:
            self._timer = self.loop.call_at(silent_until, self._check_silence)

    async def drain(self) -> None:
        if self.closed:
            raise Disconnected("the upstream closed the connection")
        if self._drain is not None:
            await self._drain

    # --- request lifecycle ----------------------------------------------------------------
    def start(self, head_only: bool) -> Response:
        self._active = Response(self, head_only)
        self.last_activity = self.loop.time()
        return self._active

    def response_complete(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def finish(self, response: Response) -> None:
        if self._active is not response:
            return
        self._active = None
        if response._done and response.keep_alive and not self.closed:
            self.resume_reading()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
        self.pool.forget(self)

    def uncount(self) -> bool:
        """True the first time: the pool's count of open connections drops once."""
        counted, self._counted = self._counted, False
        return counted


class Begun(NamedTuple):
    """A request `UpstreamClient.begin` wrote; its response head is still to come."""

    conn: _Connection
    response: Response
    method: str
    head: bytes
    body: bytes | None
    chunked: bool

    def abandon(self) -> None:
        """Nobody will read the response (the client left first): close the connection,
        so the upstream sees the disconnect and stops generating."""
        self.conn.close()
        self.response.release()


def _may_resend(conn: _Connection, exc: Disconnected, method: str, body: Body) -> bool:
    """A reused connection the upstream closed before answering: send again only when that
    cannot run the request twice (nothing was written, or the method is idempotent) and
    the body can be replayed."""
    if not conn.reused or isinstance(body, AsyncIterator):
        return False
    return isinstance(exc, NotSent) or method in IDEMPOTENT_METHODS


class UpstreamClient:
    """A pool of keep-alive connections to one upstream origin."""

    def __init__(
        self,
        *,
        pool_size: int,
        pool_timeout: float = 10.0,
        head_max_bytes: int = 64 * 1024,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
    ) -> None:
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.head_max_bytes = head_max_bytes
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or being opened, idle ones included
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._origin: tuple[str, int, ssl.SSLContext | None, bytes] | None = None

    def origin(self, base: str) -> None:
        """Where requests go: the scheme, host and port of the upstream URL."""
        parts = urlsplit(base)
        https = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if https else 80)
        default = (https and port == 443) or (not https and port == 80)
        name = f"[{host}]" if ":" in host else host
        host_header = name if default else f"{name}:{port}"
        context = ssl.create_default_context() if https else None
        self._origin = (host, port, context, host_header.encode("idna"))

    # --- pool -----------------------------------------------------------------------------
    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection still worth reusing; stale ones close."""
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            if not conn.closed and conn.loop.time() - conn.last_activity < KEEPALIVE_SECONDS:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def _acquire(self) -> _Connection:
        loop = asyncio.get_running_loop()
        idle = self._take_idle()
        if idle is not None:
            return idle
        while self._open >= self.pool_size:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(self.pool_timeout):
                    await waiter
            except TimeoutError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken as time ran out: pass the free slot on
                raise PoolTimeout("no upstream connection became free in time") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self._idle:
                return await self._acquire()
        self._open += 1
        try:
            return await self._connect(loop)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        assert self._origin is not None, "UpstreamClient.origin() was not called"
        host, port, context, _ = self._origin
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self, loop),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout("timed out connecting to the upstream") from None
        except OSError as exc:
            raise ConnectError(f"cannot connect to the upstream: {exc}") from None
        return protocol

    def put_back(self, conn: _Connection) -> None:
        conn.last_activity = conn.loop.time()
        conn.idle_handle = conn.loop.call_later(KEEPALIVE_SECONDS, conn.close)
        self._idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
        """A connection closed: it no longer counts against the pool size."""
        if not conn.uncount():
            return
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        if conn.idle_handle is not None:
            conn.idle_handle.cancel()
            conn.idle_handle = None
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def has_idle(self) -> bool:
        """An idle connection may be at hand (`begin` checks it is still fit)."""
        return bool(self._idle)

    @property
    def open_connections(self) -> int:
        return self._open

    # --- requests -------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: Body,
        sent: Callable[[], None] | None = None,
    ) -> Response:
        """Send a request and return once the response head is in.

        `sent()` is called as soon as the request is written or, when no connection is
        free at once, before waiting for one: the caller's bookkeeping then runs while the
        upstream works, not before it starts. It must be idempotent (a request sent again
        calls it again).

        A request on a reused connection that the upstream closed before answering is sent
        again once on a new connection (the upstream may have closed the idle connection
        just as we picked it), but only when that cannot run it twice: no byte of it was
        written, or its method is idempotent; and only when its body can be replayed.
        A generation (POST) that reached the upstream is never sent again.
        """
        head, chunked = self._request_head(method, target, headers, body)
        if sent is not None and not self._idle:
            sent()  # a connect or a wait for the pool comes first
        conn = await self._acquire()
        try:
            return await self._exchange(conn, method == "HEAD", head, body, chunked, sent)
        except Disconnected as exc:
            if not _may_resend(conn, exc, method, body):
                raise
        conn = await self._acquire()
        return await self._exchange(conn, method == "HEAD", head, body, chunked, sent)

    def begin(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> Begun | None:
        """Write a request whose body is in hand on an idle connection now, synchronously
        (from the server's parser callback, before any task runs): the upstream starts
        work without waiting for the loop to run the request's task. None when no idle
        connection is fit for it; then nothing was written (use `request`). `answer()`
        gets the response head."""
        conn = self._take_idle()
        if conn is None:
            return None
        transport = conn.transport
        if transport is None or transport.is_closing():
            conn.close()
            return None
        head, chunked = self._request_head(method, target, headers, body)
        response = self._start(conn, method == "HEAD")
        transport.write(head + body if body else head)
        return Begun(conn, response, method, head, body, chunked)

    async def answer(self, begun: Begun, sent: Callable[[], None] | None = None) -> Response:
        """The response head of a request `begin` wrote; `sent()` is called first (it was
        written), and again if it is sent again on a new connection, on `request`'s terms."""
        conn, response = begun.conn, begun.response
        try:
            await self._head(conn, response, sent)
            return response
        except Disconnected as exc:
            if not _may_resend(conn, exc, begun.method, begun.body):
                raise
        conn = await self._acquire()
        return await self._exchange(
            conn, begun.method == "HEAD", begun.head, begun.body, begun.chunked, sent
        )

    def _start(self, conn: _Connection, head_only: bool) -> Response:
        response = conn.start(head_only)
        if self.total_timeout:
            response._deadline = conn.loop.call_later(
                self.total_timeout,
                response.fail,
                ReadTimeout("the upstream exchange took longer than the total timeout"),
            )
        return response

    @staticmethod
    async def _head(conn: _Connection, response: Response, sent: Callable[[], None] | None) -> None:
        """`sent()` (the request is written), then the response head; on any failure the
        connection is closed and the response released."""
        try:
            if sent is not None:
                sent()
            await response.head()
        except BaseException:
            conn.close()
            response.release()
            raise

    async def _exchange(
        self,
        conn: _Connection,
        head_only: bool,
        head: bytes,
        body: Body,
        chunked: bool,
        sent: Callable[[], None] | None = None,
    ) -> Response:
        response = self._start(conn, head_only)
        try:
            await self._send(conn, head, body, chunked)
        except BaseException:
            conn.close()
            response.release()
            raise
        await self._head(conn, response, sent)
        return response

    def _request_head(
        self, method: str, target: str, headers: list[tuple[str, str]], body: Body
    ) -> tuple[bytes, bool]:
        """The request head, with the body framing HTTP/1.1 needs; True: send it chunked.

        Built once per request, also when the request is sent again on a new connection.
        """
        assert self._origin is not None, "UpstreamClient.origin() was not called"
        has_length = False
        lines = [f"{method} {target or '/'} HTTP/1.1\r\n".encode("latin-1")]
        lines.append(b"host: " + self._origin[3] + b"\r\n")
        for name, value in headers:
            if name == "content-length":
                has_length = True
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        chunked = False
        if body is None or isinstance(body, bytes):
            if not has_length and (body or method not in BODYLESS_METHODS):
                lines.append(b"content-length: %d\r\n" % len(body or b""))
        elif not has_length:
            chunked = True
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        return b"".join(lines), chunked

    async def _send(self, conn: _Connection, head: bytes, body: Body, chunked: bool) -> None:
        assert conn.transport is not None
        transport = conn.transport
        if conn.closed or transport.is_closing():
            raise NotSent("the upstream closed the connection before the request was sent")
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
            return
        transport.write(head)
        try:
            async for chunk in body:
                if not chunk:
                    continue
                if conn.closed:
                    raise Disconnected("the upstream closed the connection during the upload")
                if chunked:  # the chunk is not copied into a framed one (it may be 8 MiB)
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await conn.drain()
            if chunked and not conn.closed:
                transport.write(b"0\r\n\r\n")
        except Disconnected:
            active = conn._active
            if active is None or not active.answered:
                raise
            # the upstream answered early (413, say) and closed: its answer stands

    async def close(self) -> None:
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
