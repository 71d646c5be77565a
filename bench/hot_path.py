"""Benchmark: the proxy's own CPU per streamed event and per request, in one process.

The end-to-end figures (`bench.run`) carry the kernel's loopback, the upstream and the
load generator, and on a shared 2-core machine they move by 10-15 % from run to run: too
much to see a cut of a few microseconds. This drives the real relay path instead, with
nothing else running: uvicorn's real `RequestResponseCycle` (its `send`, `receive` and
the task per request), `ProxyApp`, the upstream `Response` with its httptools parser, the
SSE parser, the meter and the accumulators. Sockets are replaced by in-memory transports,
so no syscall is counted: what is left is the Python a worker runs.

Each request: the cycle starts the application, which reads the body, sends it "upstream"
and gets a streaming head; then every token event is fed to the upstream connection as
its own HTTP chunk and the loop runs once (the relay forwards, parses and measures it).
CPU time (`time.process_time`) is split into the events' part and the rest of the request.
Usage: `python -m bench.hot_path [--requests 2000] [--tokens 20] [--repeat 5]`; the best
of the repeats is reported (a shared machine only ever adds time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from infermeter import guard
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import Response, UpstreamClient, _Connection
from infermeter.runtime import loop_factory
from infermeter.streams.timing import SLO

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
BODY = json.dumps(
    {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
).encode()


def _framed(event: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(event), event)


def _chunk(payload: dict[str, Any]) -> bytes:
    return _framed(b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


def _delta(delta: dict[str, str], finish: str | None = None) -> bytes:
    return _chunk(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


ROLE = _delta({"role": "assistant"})
TOKEN = _delta({"content": "tok"})
TOKEN_EVENT_BYTES = len(TOKEN.split(b"\r\n")[1])  # the SSE event inside the HTTP chunk
LAST = _delta({}, "stop") + _framed(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class _Sink(asyncio.Transport):
    """A transport that keeps nothing: the client's and the upstream's socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class _Upstream(UpstreamClient):
    """An upstream client whose connection is fed by the benchmark, not by a socket."""

    def __init__(self) -> None:
        super().__init__(pool_size=1, connect_timeout=1.0, read_timeout=0.0, total_timeout=0.0)
        self.conn: _Connection | None = None
        self.asked = asyncio.Event()  # the application sent its request "upstream"

    async def request(
        self, method: str, target: str, headers: Any, body: Any, sent: Any = None
    ) -> Response:
        conn = _Connection(self, asyncio.get_running_loop())
        conn.connection_made(_Sink())
        self.conn = conn
        response = conn.start(head_only=False)
        if sent is not None:
            sent()
        conn.data_received(HEAD)
        self.asked.set()
        await response.head()
        return response


async def _run(requests: int, tokens: int) -> tuple[float, float, int]:
    """CPU seconds spent feeding events and on everything else of the requests, and the
    bytes the client was sent (a check that the relay really forwarded)."""
    upstream = _Upstream()
    app = ProxyApp("http://127.0.0.1:9", upstream, Recorder.private(64, SLO(None, None, None)))
    log = logging.getLogger("bench.hot_path")
    transport = _Sink()
    flow = FlowControl(transport)
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    events = 0.0
    started = time.process_time()
    for _ in range(requests):
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
        }
        scope[guard.DISCONNECTED] = None  # what the guarded protocol offers every request
        cycle = RequestResponseCycle(
            scope=scope,  # type: ignore[arg-type]
            transport=transport,
            flow=flow,
            logger=log,
            access_logger=log,
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
        cycle.body = bytearray(BODY)
        cycle.more_body = False
        cycle.message_event.set()  # what the protocol does once the body is in
        task = asyncio.ensure_future(cycle.run_asgi(app))
        await upstream.asked.wait()
        upstream.asked.clear()
        conn = upstream.conn
        assert conn is not None
        conn.data_received(ROLE)
        await asyncio.sleep(0)
        begin = time.process_time()
        for _ in range(tokens):
            conn.data_received(TOKEN)
            await asyncio.sleep(0)
        events += time.process_time() - begin
        conn.data_received(LAST)
        await task
    total = time.process_time() - started
    return events, total - events, transport.written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    best_event = best_request = float("inf")
    for _ in range(args.repeat):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            events, rest, written = runner.run(_run(args.requests, args.tokens))
        best_event = min(best_event, events / (args.requests * args.tokens))
        best_request = min(best_request, rest / args.requests)
    print(
        json.dumps(
            {
                "benchmark": "hot_path",
                "requests": args.requests,
                "tokens": args.tokens,
                "cpu_us_per_event": round(best_event * 1e6, 2),
                "cpu_us_per_request_besides_events": round(best_request * 1e6, 1),
                "client_bytes_per_request": written // args.requests,
            }
        )
    )


if __name__ == "__main__":
    main()
