"""The proxy's upstream HTTP/1.1 client against raw loopback servers that misbehave on cue.

Each server is a real asyncio TCP server answering with scripted bytes, so framing corner
cases (HEAD, 1xx, a body that runs until the close, stale keep-alive connections) reach the
client exactly as a real upstream would send them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from infermeter.proxy.upstream import (
    KEEPALIVE_SECONDS,
    ConnectError,
    Disconnected,
    HeadTooLarge,
    PoolTimeout,
    ReadTimeout,
    Response,
    UpstreamClient,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Head and body of one request (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    return head, body


class Upstream:
    """A loopback server running `handler` per connection; `stop` closes every connection."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.url = ""

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await self._handler(reader, writer)

    async def start(self) -> Upstream:
        self._server = await asyncio.start_server(self._run, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()


async def serve(handler: Handler) -> tuple[Upstream, str]:
    upstream = await Upstream(handler).start()
    return upstream, upstream.url


def stalls_after(answer: bytes) -> Handler:
    """A handler that reads the request, writes `answer` (maybe nothing) and goes silent."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await asyncio.sleep(10)

    return handler


def client(url: str, **kw: float) -> UpstreamClient:
    c = UpstreamClient(
        pool_size=int(kw.get("pool_size", 8)),
        pool_timeout=kw.get("pool_timeout", 10.0),
        head_max_bytes=int(kw.get("head_max_bytes", 64 * 1024)),
        connect_timeout=kw.get("connect_timeout", 2.0),
        read_timeout=kw.get("read_timeout", 5.0),
        total_timeout=kw.get("total_timeout", 0.0),
    )
    c.origin(url)
    return c


async def body_of(response: Response) -> bytes:
    out = b""
    while chunk := await response.read():
        out += chunk
    response.release()
    return out


def run(coro: Awaitable[None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, 20)
        await asyncio.sleep(0.01)  # let closed transports finish closing

    asyncio.run(bounded())


def test_keep_alive_reuses_one_connection_and_sends_host_and_length() -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            seen.append(head + body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello")

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        for _ in range(3):
            r = await c.request("POST", "/v1/x?q=1", [("content-type", "text/plain")], b"abc")
            assert r.status == 200
            assert r.header(b"x-a") == "1"
            assert await body_of(r) == b"hello"
        assert connections == 1
        assert seen[0].startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n")
        assert f"host: {url.removeprefix('http://')}\r\n".encode() in seen[0]
        assert b"content-length: 3\r\n" in seen[0]
        assert seen[0].endswith(b"\r\n\r\nabc")
        await c.close()
        server.close()

    run(main())


def test_streamed_upload_is_chunked_without_a_length_and_raw_with_one() -> None:
    bodies: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            try:
                bodies.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"ab", b"", b"cd"):
            yield piece

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        r = await c.request("POST", "/", [], pieces())
        assert await body_of(r) == b""
        r = await c.request("POST", "/", [("content-length", "4")], pieces())
        assert await body_of(r) == b""
        assert b"transfer-encoding: chunked" in bodies[0][0]
        assert bodies[0][1] == b"abcd"
        assert b"transfer-encoding" not in bodies[1][0]
        assert bodies[1][1] == b"abcd"
        server.close()

    run(main())


def test_head_response_ends_at_its_head_and_the_connection_is_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                head, _ = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        r = await c.request("HEAD", "/", [], None)
        assert r.header(b"content-length") == "1000"
        assert await body_of(r) == b""
        r = await c.request("GET", "/", [], None)
        assert await body_of(r) == b"ok"
        assert connections == 1
        server.close()

    run(main())


def test_interim_1xx_responses_are_skipped() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew")

    async def main() -> None:
        server, url = await serve(handler)
        r = await client(url).request("GET", "/", [], None)
        assert r.status == 201
        assert r.header(b"link") is None
        assert await body_of(r) == b"new"
        server.close()

    run(main())


def test_body_until_close_is_complete_but_a_cut_length_is_a_disconnect() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server, url = await serve(until_close)
        c = client(url)
        r = await c.request("GET", "/", [], None)
        assert await body_of(r) == b"all of it"
        assert c.open_connections == 0
        server.close()
        server, url = await serve(cut)
        r = await client(url).request("GET", "/", [], None)
        assert await r.read() == b"part"
        with pytest.raises(Disconnected):
            await r.read()
        r.release()
        server.close()

    run(main())


def _stale_after_one_answer(received: list[bytes]) -> Handler:
    """An upstream that promises keep-alive, then on the next request reads all of it and
    closes without answering (an idle-timeout race, or a crash mid-request)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            received.append(head)
            if len(received) % 2 == 0:
                writer.transport.abort()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    return handler


def test_stale_pooled_connection_is_retried_once_for_an_idempotent_request() -> None:
    received: list[bytes] = []

    async def main() -> None:
        server, url = await serve(_stale_after_one_answer(received))
        c = client(url)
        assert await body_of(await c.request("GET", "/", [], None)) == b"ok"
        assert await body_of(await c.request("GET", "/", [], None)) == b"ok"
        assert len(received) == 3  # the second GET went twice: once lost, once answered
        server.close()

    run(main())


def test_a_generation_that_reached_the_upstream_is_never_sent_twice() -> None:
    received: list[bytes] = []

    async def main() -> None:
        server, url = await serve(_stale_after_one_answer(received))
        c = client(url)
        assert await body_of(await c.request("POST", "/", [], b"1")) == b"ok"
        with pytest.raises(Disconnected):
            await c.request("POST", "/v1/chat/completions", [], b'{"model":"m"}')
        posts = [head for head in received if head.startswith(b"POST /v1/chat")]
        assert len(posts) == 1
        server.close()

    run(main())


def test_read_timeout_before_the_head_and_between_chunks() -> None:
    silent = stalls_after(b"")
    stalls = stalls_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")

    async def main() -> None:
        server, url = await serve(silent)
        with pytest.raises(ReadTimeout):
            await client(url, read_timeout=0.3).request("GET", "/", [], None)
        server.close()
        server, url = await serve(stalls)
        r = await client(url, read_timeout=0.3).request("GET", "/", [], None)
        assert await r.read() == b"hi"
        with pytest.raises(ReadTimeout):
            await r.read()
        r.release()
        server.close()

    run(main())


def test_pool_size_limits_open_connections_and_waiters_get_freed_ones() -> None:
    peak = current = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal peak, current
        current += 1
        peak = max(peak, current)
        try:
            while not reader.at_eof():
                await read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        except asyncio.IncompleteReadError:
            pass
        finally:
            current -= 1

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url, pool_size=2)

        async def one() -> bytes:
            return await body_of(await c.request("GET", "/", [], None))

        assert await asyncio.gather(*(one() for _ in range(6))) == [b"x"] * 6
        assert peak == 2
        assert c.open_connections == 2
        await c.close()
        server.close()

    run(main())


def test_idle_connections_are_closed_before_the_upstream_would() -> None:
    closed = asyncio.Event

    async def main() -> None:
        gone = closed()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            await reader.read()  # until the client closes
            gone.set()

        server, url = await serve(handler)
        c = client(url)
        assert await body_of(await c.request("GET", "/", [], None)) == b"x"
        assert c.open_connections == 1
        await asyncio.wait_for(gone.wait(), KEEPALIVE_SECONDS + 2)
        assert c.open_connections == 0
        server.close()

    run(main())


def test_refused_connection_names_the_cause() -> None:
    async def main() -> None:
        server, url = await serve(read_request)  # type: ignore[arg-type]
        server.close()
        await asyncio.sleep(0.05)
        with pytest.raises(ConnectError, match="cannot connect to the upstream"):
            await client(url).request("GET", "/", [], None)

    run(main())


def test_client_cancellation_closes_the_connection() -> None:
    handler = stalls_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        r = await c.request("GET", "/", [], None)
        reading = asyncio.ensure_future(r.read())
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        r.release()
        assert c.open_connections == 0
        server.close()

    run(main())


def test_a_response_head_over_the_limit_fails_and_closes() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(100_000):
            writer.write(b"X-%d: %b\r\n" % (i, b"h" * 1000))
            await writer.drain()

    async def one_big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # a single header larger than the limit, in one write
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n")

    async def main() -> None:
        for handler in (endless, one_big):
            server, url = await serve(handler)
            c = client(url, head_max_bytes=4096)
            with pytest.raises(HeadTooLarge):
                await c.request("GET", "/", [], None)
            assert c.open_connections == 0
            server.close()

    run(main())


def test_bytes_beyond_a_complete_response_close_the_connection() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA BYTES")

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        for _ in range(3):
            assert await body_of(await c.request("GET", "/", [], None)) == b"ok"
        assert connections == 3
        server.close()

    run(main())


def test_waiting_for_a_full_pool_ends_after_the_pool_timeout() -> None:
    slow = stalls_after(b"")

    async def main() -> None:
        server, url = await serve(slow)
        c = client(url, pool_size=1, pool_timeout=0.2)
        busy = asyncio.ensure_future(c.request("GET", "/", [], None))
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout):
            await c.request("GET", "/", [], None)
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy
        server.close()

    run(main())


def test_relay_hands_every_chunk_to_the_sink_in_order_and_holds_the_upstream() -> None:
    """Relay mode: chunks buffered before `relay()` go first, the rest as they are parsed;
    `hold()` wakes the consumer and stops reading, `resume()` goes on; the read timeout
    and a cut body still end it."""
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
        await writer.drain()
        await release.wait()
        for part in (b"cd", b"ef", b"gh"):
            writer.write(b"2\r\n%b\r\n" % part)
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(b"0\r\n\r\n")

    stalls = stalls_after(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhi")

    async def main() -> None:
        server, url = await serve(handler)
        c = client(url)
        r = await c.request("GET", "/", [], None)
        await asyncio.sleep(0.05)  # the first chunk is buffered before the relay starts
        got: list[bytes] = []

        def sink(chunk: bytes) -> None:
            got.append(chunk)
            if chunk == b"cd":
                r.hold()

        r.relay(sink)
        assert got == [b"ab"]
        release.set()
        assert await r.relayed() is False  # held after "cd"
        assert got == [b"ab", b"cd"]
        await asyncio.sleep(0.1)  # held: the upstream is not read meanwhile
        assert got == [b"ab", b"cd"]
        r.resume()
        assert await r.relayed() is True
        assert got == [b"ab", b"cd", b"ef", b"gh"]
        r.unrelay()
        r.release()
        server.close()

        server, url = await serve(stalls)
        r = await client(url, read_timeout=0.3).request("GET", "/", [], None)
        got.clear()
        r.relay(got.append)
        with pytest.raises(ReadTimeout):
            await r.relayed()
        assert got == [b"hi"]
        r.release()
        server.close()
        await c.close()

    run(main())


def test_a_request_begun_early_is_sent_again_on_the_same_terms() -> None:
    """`begin` writes at once on an idle connection; `answer` then follows `request`'s
    rules when that connection turns out stale: a GET goes again, a POST never does."""
    received: list[bytes] = []

    async def main() -> None:
        server, url = await serve(_stale_after_one_answer(received))
        c = client(url)
        assert c.begin("GET", "/", [], None) is None  # no idle connection yet
        assert received == []
        assert await body_of(await c.request("GET", "/", [], None)) == b"ok"
        begun = c.begin("GET", "/", [], None)
        assert begun is not None
        assert await body_of(await c.answer(begun)) == b"ok"
        assert len(received) == 3  # lost once, answered on a new connection
        begun = c.begin("POST", "/v1/chat/completions", [], b'{"model":"m"}')
        assert begun is not None
        with pytest.raises(Disconnected):
            await c.answer(begun)
        posts = [head for head in received if head.startswith(b"POST /v1/chat")]
        assert len(posts) == 1
        server.close()

    run(main())
