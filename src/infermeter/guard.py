"""Limits on what one client connection may cost, for both ports (uvicorn + httptools).

uvicorn's httptools protocol has none of these: httptools buffers a header of any size
(a 128 MiB header value is held whole before it is reported), counts no headers, waits
forever for a head or a body, and accepts any number of connections (`limit_concurrency`
answers 503 only once a request head is complete, and the idle connection stays open).
`h11_max_incomplete_event_size` exists for the h11 protocol only. So this subclass adds,
in the spirit of nginx's `large_client_header_buffers`, `client_header_timeout` and
`client_body_timeout` and Envoy's `max_request_headers_kb` / `max_headers_count`:

- a cap on the request head (request line + headers) in bytes and in header count: 431;
- a header timeout (from the connection or the request's first byte): 408;
- a body idle timeout (between two reads of the body): 408;
- a cap on open connections per port: 503 and close;
- 400 for a request without Host (HTTP/1.1) or with several, and for Upgrade with a body
  (the proxy does not tunnel upgrades, and the parser would stop reading that body);
- request trailers are dropped (httptools reports them as headers, appended after the
  request started: they would reach the upstream as headers).

A rejection the application should know about (it was already running the request) is
marked in its scope under `REJECTED`, so the proxy counts the status we answered instead
of a client disconnect.

Every request's scope also carries `DISCONNECTED`: the application may put a callable
there, which the protocol calls when the connection is lost or cut while the request runs
(what `receive()` would report as `http.disconnect`), so the proxy needs no task per
request waiting on `receive()` just to notice a client leaving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:  # the worker gets a WorkerConfig, not the pydantic model
    from infermeter.settings import Settings
    from infermeter.worker_config import WorkerConfig

#: Scope key holding the status the server answered with when it cut a running request.
REJECTED = "infermeter.rejected"
#: Scope key where the application may leave a callable for the connection's end (None:
#: nothing to call). Present only under this protocol: elsewhere, watch `receive()`.
DISCONNECTED = "infermeter.disconnected"
Reject = Callable[[str], None]  # counts a rejection by reason
#: `eager(scope, body)`: called from the parser once a request's head and whole body are
#: in, before the request's task first runs; True means it took the body over (the task
#: must not `receive()` it: `scope` carries what the application needs instead).
Eager = Callable[[dict[str, Any], bytes], bool]


@dataclass(frozen=True, slots=True)
class Limits:
    head_max_bytes: int
    max_headers: int
    header_timeout: float
    body_timeout: float
    max_connections: int


def response(status: int, message: str) -> bytes:
    """A complete response that closes the connection."""
    body = message.encode() + b"\n"
    phrase = HTTPStatus(status).phrase.encode()
    return b"HTTP/1.1 %d %b\r\ncontent-type: text/plain; charset=utf-8\r\n" % (status, phrase) + (
        b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
    )


def guarded_protocol(
    limits: Limits, on_reject: Reject, eager: Eager | None = None
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with `limits`; `on_reject(reason)` counts refusals.

    `eager(scope, body)`, when given, is offered every request whose head and whole body
    came in one read, before its task first runs (see `Eager`)."""

    class Guarded(HttpToolsProtocol):
        _g_fresh = False  # this read completed the head of a request whose task is started
        _g_in_head = True  # reading a request head (the first one from the connection on)
        _g_headers_done = False  # the head of the current request is complete
        _g_head_bytes = 0  # bytes read while in the head (httptools holds them)
        _g_head_size = 0  # request line and header fields, as parsed
        _g_headers = 0
        _g_hosts = 0
        _g_head_start = 0.0
        _g_since_body = 0  # bytes read in the body phase that were not body (trailers)
        _g_body_seen = False
        _g_timer: asyncio.TimerHandle | None = None
        _g_last_body = 0.0
        _g_rejected = False
        _g_got_bytes = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                self._g_refuse(503, "connection_limit", "too many connections")
                return
            self._g_arm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._g_cancel()
            super().connection_lost(exc)
            self._g_tell_gone()

        def _g_tell_gone(self) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                hook = cast("Callable[[], None] | None", cycle.scope.get(DISCONNECTED))
                if hook is not None:
                    cycle.scope[DISCONNECTED] = None  # type: ignore[literal-required]
                    hook()

        def data_received(self, data: bytes) -> None:
            if self._g_rejected:
                return
            self._g_got_bytes = True
            in_head = self._g_in_head
            in_body = self._g_headers_done and self.cycle.more_body
            self._g_body_seen = False
            super().data_received(data)
            self._g_fresh = False  # the task may run before the next read: it owns the body
            if self._g_rejected:
                return
            # Timers are armed only when a head or body is still incomplete after a read:
            # most requests come whole in one read and cost no timer.
            if self._g_in_head:
                if in_head:  # all of `data` was head: httptools holds it
                    self._g_head_bytes += len(data)
                    if self._g_head_bytes > limits.head_max_bytes:
                        self._g_refuse(431, "head_too_large", "request header fields too large")
                        return
                if self._g_timer is None:
                    due = self._g_head_start + limits.header_timeout
                    self._g_timer = self.loop.call_at(due, self._g_head_expired)
            elif self._g_headers_done and self.cycle.more_body:  # a body still to come
                if self._g_body_seen:
                    self._g_last_body = self.loop.time()
                elif in_body:
                    self._g_since_body += len(data)  # chunk framing and trailers, no body
                    if self._g_since_body > limits.head_max_bytes:
                        self._g_refuse(431, "head_too_large", "request trailers too large")
                        return
                if self._g_timer is None:
                    self._g_last_body = self.loop.time()
                    self._g_timer = self.loop.call_later(limits.body_timeout, self._g_body_check)

        def _g_reading_body(self) -> bool:
            return self._g_headers_done and self.cycle is not None and self.cycle.more_body

        # --- parser callbacks ---------------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._g_in_head = True
            self._g_headers_done = False
            self._g_head_bytes = self._g_head_size = self._g_headers = self._g_hosts = 0
            self._g_since_body = 0
            if self._g_timer is None:  # a keep-alive request: its head timer starts now
                self._g_head_start = self.loop.time()

        def on_header(self, name: bytes, value: bytes) -> None:
            # uvicorn's on_header inlined (lower-case name, note Expect: 100-continue):
            # this runs for every header of every request, and a super() call costs.
            if self._g_headers_done or self._g_rejected:
                return  # a trailer: dropped, as nginx and Envoy do
            self._g_headers += 1
            if self._g_headers > limits.max_headers:
                self._g_refuse(431, "too_many_headers", "too many request header fields")
                return
            self._g_head_size += len(name) + len(value) + 4
            name = name.lower()
            if name == b"host":
                self._g_hosts += 1
            elif name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            if self._g_rejected:
                return
            self._g_in_head = False
            self._g_cancel()
            if len(self.url) + self._g_head_size > limits.head_max_bytes:
                self._g_refuse(431, "head_too_large", "request header fields too large")
                return
            hosts = self._g_hosts
            if hosts != 1 and (hosts > 1 or self.parser.get_http_version() == "1.1"):
                self._g_refuse(400, "bad_host", "a request needs exactly one Host header")
                return
            if self.parser.should_upgrade() and _has_body(self.headers):
                self._g_refuse(400, "upgrade_with_body", "infermeter does not tunnel upgrades")
                return
            self._g_headers_done = True
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not None:
                cycle.scope[DISCONNECTED] = None  # type: ignore[literal-required]
                # Not a pipelined request waiting for the one before it to be answered.
                self._g_fresh = not (self.pipeline and self.pipeline[0][0] is cycle)

        def on_body(self, body: bytes) -> None:
            if self._g_rejected:
                return
            self._g_body_seen = True  # data_received notes the time, if it matters
            self._g_since_body = 0
            super().on_body(body)

        def on_message_complete(self) -> None:
            if self._g_rejected:
                return
            self._g_cancel()
            super().on_message_complete()
            cycle = self.cycle
            if (
                eager is not None
                and self._g_fresh
                and cycle is not None
                and not cycle.more_body
                and not cycle.response_complete
                and eager(cast("dict[str, Any]", cycle.scope), bytes(cycle.body))
            ):
                # What receive() does when it hands the body over: the task will not ask.
                cycle.body = bytearray()
                self.flow.resume_reading()
            self._g_fresh = False

        def send_400_response(self, msg: str) -> None:
            self._g_mark(400)
            on_reject("bad_request")
            self._g_rejected = True
            self._g_cancel()
            super().send_400_response(msg)

        # --- timers and refusals ------------------------------------------------------------
        def _g_arm_head(self) -> None:
            self._g_cancel()
            self._g_head_start = self.loop.time()
            self._g_timer = self.loop.call_later(limits.header_timeout, self._g_head_expired)

        def _g_head_expired(self) -> None:
            self._g_timer = None
            if self._g_in_head and not self._g_rejected:
                if self._g_got_bytes:
                    self._g_refuse(408, "header_timeout", "request header timeout")
                else:  # nothing was asked: close without an answer, as nginx does
                    on_reject("header_timeout")
                    self._g_rejected = True
                    self.transport.close()

        def _g_body_check(self) -> None:
            self._g_timer = None
            if self._g_rejected or not self._g_reading_body():
                return
            now = self.loop.time()
            if self.flow.read_paused:  # we stopped reading (the proxy is behind): not idle
                self._g_last_body = now
            due = self._g_last_body + limits.body_timeout
            if now < due:
                self._g_timer = self.loop.call_at(due, self._g_body_check)
                return
            self._g_refuse(408, "body_timeout", "request body timeout")

        def _g_cancel(self) -> None:
            if self._g_timer is not None:
                self._g_timer.cancel()
                self._g_timer = None

        def _g_mark(self, status: int) -> None:
            """Tell a running request that the server answered `status` and hung up."""
            cycle = self.cycle
            if cycle is not None and self._g_headers_done:
                cycle.scope[REJECTED] = status  # type: ignore[literal-required]

        def _g_refuse(self, status: int, reason: str, message: str) -> None:
            self._g_rejected = True
            self._g_cancel()
            on_reject(reason)
            cycle = self.cycle
            if self._g_headers_done:  # the application runs this request: end it
                if not cycle.response_started:
                    self._g_mark(status)
                    self.transport.write(response(status, message))
                cycle.disconnected = True  # its sends are dropped from now on
                cycle.message_event.set()
                self._g_tell_gone()
            elif cycle is None or cycle.response_complete:
                self.transport.write(response(status, message))
            # else: an earlier response is still being written; a status would corrupt it
            self.transport.close()

    return Guarded


def relay_cycle(send: object) -> RequestResponseCycle | None:
    """The seam of the proxy's relay: the uvicorn cycle behind an ASGI `send`, or None.

    The proxy sends the response head and its end through `send`, as ASGI says, but writes
    the body chunks of a chunked response straight to the cycle's transport, from the
    upstream connection's data_received (no ASGI message, no task wake-up per chunk). It
    reads and keeps the cycle's state the way `RequestResponseCycle.send` does:
    `disconnected` (nothing more is written), `chunked_encoding` (the framing; only a
    chunked response is relayed), `flow.write_paused` / `flow.drain()` (back-pressure), and
    it ends the response with `send` (terminating chunk, `response_complete`, keep-alive,
    the next pipelined request). Written against uvicorn 0.54's httptools_impl (the e2e tests
    exercise every one of these states); anything but a bound `send` of uvicorn's
    `RequestResponseCycle` (a test's fake, another server) gets None, and the proxy then
    sends plain ASGI messages.
    """
    cycle = getattr(send, "__self__", None)
    return cycle if type(cycle) is RequestResponseCycle else None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


#: Open files kept for everything but client and upstream sockets: listeners, logs,
#: /proc reads, NVML, the event loops' own descriptors.
FD_RESERVE = 64


def proxy_connection_budget(wanted: int, fd_limit: int, metrics_connections: int) -> int:
    """Client connections the proxy port may hold without starving the metrics port.

    Each proxied connection may need an upstream socket as well, so it counts twice; the
    metrics port's connections and a reserve are set aside first. A flood of the proxy
    port then meets this cap long before the process runs out of file descriptors.
    """
    room = (fd_limit - metrics_connections - FD_RESERVE) // 2
    return max(1, min(wanted, room))


def settings_limits(settings: Settings | WorkerConfig, max_connections: int) -> Limits:
    """The limits of one listener from the settings (both ports share all but the cap)."""
    return Limits(
        head_max_bytes=settings.request_head_max_bytes,
        max_headers=settings.request_max_headers,
        header_timeout=settings.request_header_timeout,
        body_timeout=settings.request_body_timeout,
        max_connections=max_connections,
    )


class _Labelled(Protocol):
    def labels(self, *values: str) -> Any: ...


def counting(family: _Labelled, listener: str) -> Reject:
    """Counts refusals of `listener` by reason in `family` (children made once)."""
    children: dict[str, Any] = {}

    def reject(reason: str) -> None:
        child = children.get(reason)
        if child is None:
            child = children[reason] = family.labels(listener, reason)
        child.inc()

    return reject


def share(total: int, workers: int) -> int:
    """One worker's part of a sidecar-wide budget (connections, pool, buffered bytes)."""
    return max(1, -(-total // max(1, workers)))
