"""The eager upstream write: a request whose head and body came in one read is written
upstream from the server's parser callback, before its task runs (guard.Eager,
ProxyApp.eager).

The guard's side runs a real uvicorn server with the guarded protocol on loopback and
real client sockets; the application's side drives ProxyApp against a real scripted
upstream, as tests/test_proxy_unit.py does.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from harness.accum import StoreView
from harness.upstream import Script, ScriptedUpstream, scripted_upstream, sse
from infermeter.guard import DISCONNECTED, Limits, guarded_protocol
from infermeter.proxy.app import EAGER, ProxyApp
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.runtime import loop_factory
from infermeter.streams.timing import SLO

LIMITS = Limits(
    head_max_bytes=16384, max_headers=100, header_timeout=5, body_timeout=5, max_connections=16
)
BODY = b'{"model": "m", "stream": true}'
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'


def _head(length: int) -> bytes:
    return b"POST /v1/x HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n" % length


async def _through_guard(*sends: tuple[float, bytes]) -> tuple[list[bytes], list[bytes]]:
    """Send `sends` (delay before, bytes) on one connection to a uvicorn server with the
    guarded protocol; (bodies offered to eager, bodies the application read itself)."""
    import uvicorn

    offered: list[bytes] = []
    read: list[bytes] = []

    def eager(scope: dict[str, Any], body: bytes) -> bool:
        offered.append(body)
        scope["test.eager"] = body
        return True

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if "test.eager" not in scope:  # not taken over: the body comes through receive()
            message = await receive()
            read.append(message["body"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    listen = socket.create_server(("127.0.0.1", 0))
    port = listen.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="none",
        http=guarded_protocol(LIMITS, lambda reason: None, eager=eager),
        ws="none",
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[listen]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for delay, data in sends:
        await asyncio.sleep(delay)
        writer.write(data)
    answers = sum(data.count(b"HTTP/1.1") for _, data in sends)
    got = b""
    while got.count(b"HTTP/1.1 204") < answers:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        assert chunk, got
        got += chunk
    writer.close()
    server.should_exit = True
    await serving
    return offered, read


def _run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)


def test_a_request_whole_in_one_read_is_offered_before_its_task_runs() -> None:
    offered, read = _run(_through_guard((0, _head(len(BODY)) + BODY)))
    assert offered == [BODY]
    assert read == []  # the application never asked for the body it was given


def test_a_body_in_a_later_read_is_left_to_the_task() -> None:
    offered, read = _run(_through_guard((0, _head(len(BODY))), (0.2, BODY)))
    assert offered == []
    assert read == [BODY]


def test_a_pipelined_request_waits_for_its_turn() -> None:
    """The second request's task starts only once the first is answered: it is not
    offered (it would go upstream before the answer it must follow)."""
    two = _head(len(BODY)) + BODY + _head(2) + b"{}"
    offered, read = _run(_through_guard((0, two)))
    assert offered == [BODY]
    assert read == [b"{}"]


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"host", b"t"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
        DISCONNECTED: None,  # what the guarded protocol gives every request
    }


async def _untouched() -> dict[str, Any]:
    raise AssertionError("an eager request's task must not read the body")


async def _drive(app: ProxyApp, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the request's task as uvicorn would; every ASGI message it sent."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, _untouched, send)
    return sent


async def _warm(app: ProxyApp) -> None:
    """One request through the task path: the pool then holds an idle connection."""
    from harness.asgi import call

    assert (await call(app, BODY))[0]["status"] == 200


async def _seen(upstream: ScriptedUpstream, requests: int) -> None:
    deadline = time.monotonic() + 5
    while len(upstream.seen) < requests and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    assert len(upstream.seen) == requests


def _setup(upstream_url: str, **client: Any) -> tuple[ProxyApp, UpstreamClient, StoreView]:
    pool = UpstreamClient(
        pool_size=client.get("pool_size", 4), connect_timeout=5, read_timeout=5, total_timeout=0
    )
    recorder = Recorder.private(8, SLO(None, None, None), models=("m",))
    app = ProxyApp(upstream_url, pool, recorder, buffer_budget=client.get("budget", 1 << 20))
    return app, pool, StoreView(recorder.store)


def test_an_eager_request_reaches_the_upstream_before_its_task_and_is_measured() -> None:
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0.05, sse(TOKEN, TOKEN, "[DONE]"))]))
        app, pool, view = _setup(upstream.url)

        async def scenario() -> list[dict[str, Any]]:
            try:
                await _warm(app)
                scope = _scope()
                assert app.eager(scope, BODY)
                assert scope[EAGER].begun is not None  # written on the idle connection
                await _seen(upstream, 2)  # no task exists: only the loop's I/O ran
                assert upstream.seen[1].body == BODY
                return await _drive(app, scope)
            finally:
                await pool.close()

        sent = asyncio.run(scenario())
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]).count(b"data: ") == 3
    labels = {"model": "m", "api": "chat_completions"}
    assert view.get_sample_value("infermeter_requests_total", {**labels, "code": "200"}) == 2
    assert view.get_sample_value("infermeter_time_to_first_token_seconds_count", labels) == 2
    assert view.get_sample_value("infermeter_requests_in_flight", labels) == 0
    assert len(upstream.seen) == 2  # sent once: the task did not send it again


def test_without_an_idle_connection_nothing_is_done_early() -> None:
    with scripted_upstream() as upstream:
        app, _, _ = _setup(upstream.url)
        scope = _scope()

        async def scenario() -> bool:
            return app.eager(scope, BODY)

        assert asyncio.run(scenario()) is False
    assert EAGER not in scope
    assert upstream.seen == []


def test_a_body_over_the_buffer_budget_is_left_to_the_task() -> None:
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0, sse(TOKEN, "[DONE]"))]))
        app, pool, _ = _setup(upstream.url, budget=len(BODY) - 1)

        async def scenario() -> bool:
            try:
                await _warm(app)
                return app.eager(_scope(), BODY)
            finally:
                await pool.close()

        assert asyncio.run(scenario()) is False
        assert len(upstream.seen) == 1


def test_a_client_gone_before_its_task_ran_closes_the_upstream_request() -> None:
    """The guard calls the disconnect callback as the connection is lost; the task then
    sends nothing, counts a 499, and closes the upstream connection (the upstream stops
    generating), as when a client leaves a request the task had sent."""
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0.05, sse(TOKEN, "[DONE]"))]))
        app, pool, view = _setup(upstream.url)

        async def scenario() -> list[dict[str, Any]]:
            try:
                await _warm(app)
                upstream.script("/v1/chat/completions", Script([(2.0, sse(TOKEN, "[DONE]"))]))
                scope = _scope()
                assert app.eager(scope, BODY)
                await _seen(upstream, 2)  # the upstream is generating
                scope[DISCONNECTED]()  # the connection was lost
                return await _drive(app, scope)
            finally:
                await pool.close()

        sent = asyncio.run(scenario())
        assert upstream.seen[1].gone.wait(5)  # its handler saw the disconnect
    assert sent == []
    labels = {"model": "m", "api": "chat_completions"}
    assert view.get_sample_value("infermeter_requests_total", {**labels, "code": "499"}) == 1
    assert view.get_sample_value("infermeter_requests_in_flight", labels) == 0
    assert pool.open_connections == 0
