"""The proxy's ASGI application: the hot path.

A bare ASGI callable (no framework on the stream path): it forwards every method and
path to the upstream, streams both bodies without buffering, and feeds a copy of the
response bytes to the pure stream parsers. Bytes go to the client before they are
parsed, and a failure of the measuring code never fails the request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from infermeter.accumulators import GaugeChild
from infermeter.guard import DISCONNECTED, REJECTED, relay_cycle
from infermeter.prices import Price
from infermeter.proxy.deferred import Deferred
from infermeter.proxy.errors import JSON_HEADERS, ClientStreamAborted, error_body
from infermeter.proxy.headers import request_headers, response_headers
from infermeter.proxy.recorder import OTHER_MODEL, Attrs, Recorder, Series
from infermeter.proxy.upstream import (
    Begun,
    Body,
    ConnectError,
    ConnectTimeout,
    Disconnected,
    HeadTooLarge,
    PoolTimeout,
    ReadTimeout,
    Response,
    UpstreamClient,
)
from infermeter.streams.api import Api, api_for_path
from infermeter.streams.parsers import StreamParser, parser_for
from infermeter.streams.request_info import SCAN_LIMIT, RequestInfo, parse_request_body
from infermeter.streams.timing import ErrorType, Outcome, RequestMeter

if TYPE_CHECKING:  # the SDK is imported only where tracing is on (infermeter.worker)
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from infermeter.tracing import RequestTrace, Tracing

log = logging.getLogger(__name__)
Scope = dict[str, Any]
Message = dict[str, Any]
#: The ASGI callables (uvicorn passes its own, typed alike).
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: How much of a request body is held before it goes upstream, and kept to read its model:
#: the OpenAI SDK writes "model" after "messages", so the whole body is needed. Holding it
#: (as nginx's proxy_request_buffering does) means a stalled upload never holds an
#: upstream connection, and the body can be replayed.
REQUEST_INSPECT_LIMIT = 8 * 1024 * 1024
STREAMING_TYPES = ("text/event-stream", "application/x-ndjson", "application/jsonl")
CLIENT_CLOSED = 499  # nginx's code for "the client closed the request first"
ParserFactory = Callable[..., StreamParser]


class Failure(NamedTuple):
    status: int
    error_type: ErrorType
    reason: str


#: Scope key of a request `ProxyApp.eager` took over (an `_Early`).
EAGER = "infermeter.eager"


class _Exchange:
    """Per-request state shared with the disconnect watcher and the body generator."""

    __slots__ = (
        "api",
        "attrs",
        "body",
        "client_gone",
        "finished",
        "held",
        "in_flight",
        "info",
        "path",
        "price",
        "series",
        "trace",
        "whole",
    )

    def __init__(self, api: Api, path: str) -> None:
        self.api = api
        self.path = path
        self.body = bytearray()  # a body being held, or the held prefix of a streamed one
        self.whole: bytes | None = None  # the body, once held whole
        self.info: RequestInfo | None = None
        self.series: Series | None = None
        self.attrs: Attrs = ()  # the --attribute label values, from the request's headers
        self.price: Price | None = None  # its model's price, with --prices
        self.in_flight: GaugeChild | None = None  # the gauge child, once incremented
        self.trace: RequestTrace | None = None
        self.client_gone = False
        self.finished = False
        self.held = 0  # bytes of the buffer budget this request holds


class _Early:
    """What `ProxyApp.eager` did for a request, for its task."""

    __slots__ = ("begun", "data", "exchange", "headers", "t0", "target")

    def __init__(
        self,
        exchange: _Exchange,
        t0: float,
        target: str,
        headers: list[tuple[str, str]],
        data: bytes | None,
        begun: Begun | None,
    ) -> None:
        self.exchange = exchange
        self.t0 = t0
        self.target = target
        self.headers = headers
        self.data = data
        self.begun = begun  # None: no connection was fit; the task sends it


#: The answer for a client that left before its request's task ran (counted as gone).
_LEFT = Failure(CLIENT_CLOSED, ErrorType.CLIENT_DISCONNECT, "the client went away")


class ProxyApp:
    def __init__(
        self,
        upstream: str,
        client: UpstreamClient,
        recorder: Recorder,
        parser_factory: ParserFactory = parser_for,
        tracing: Tracing | None = None,
        strip_headers: frozenset[bytes] = frozenset(),
        buffer_budget: int = 64 * 1024 * 1024,
    ) -> None:
        self.upstream = upstream
        self._budget = buffer_budget
        self._held = 0  # request body bytes held by all requests (bounded by the budget)
        self._tracing = tracing
        self._parser_for = parser_factory
        self._base_path = urlsplit(upstream).path.rstrip("/")
        client.origin(upstream)
        self._client = client
        self._deferred = Deferred()  # what the relay measures, in batches
        self._recorder = recorder
        self._attributed = bool(recorder.attribution)
        self._strip = strip_headers  # request headers not forwarded (attribute headers)
        self.started = False
        self.draining = False  # set at SIGTERM: a cancelled request is a drain casualty
        self.drain_aborted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._proxy(scope, receive, send, time.perf_counter())
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- request ---------------------------------------------------------------------------
    def _label(self, exchange: _Exchange) -> Series:
        """Resolve the (model, api) series once the request body has been read."""
        if exchange.series is None:
            if exchange.info is None:
                body = exchange.whole if exchange.whole is not None else bytes(exchange.body)
                exchange.info = parse_request_body(exchange.api, body, path=exchange.path)
            exchange.series = self._recorder.series(exchange.info.model, exchange.api)
            exchange.price = self._recorder.price(exchange.info.model)
        return exchange.series

    def _in_flight(self, exchange: _Exchange, body: bytes) -> None:
        """The request is in flight under its labels (read from its body).

        A held body is read for its model once it is on its way upstream (the client calls
        this right after writing it, or before it waits for a connection): the upstream
        starts work a JSON parse and a label lookup earlier, which is the added TTFT."""
        if exchange.in_flight is not None:
            return  # a request sent again on a new connection
        series = self._label(exchange)
        exchange.body = bytearray()
        exchange.in_flight = series.child("in_flight")
        exchange.in_flight.inc()
        if exchange.trace is not None and exchange.info is not None:
            info = exchange.info
            exchange.trace.request(info.model, series.model, info.stream, body)

    async def _stream_body(
        self,
        first: bytes | bytearray,
        receive: Receive,
        exchange: _Exchange,
        watch: Callable[[], None],
    ) -> AsyncIterator[bytes | bytearray]:
        """Forward a request body that arrives in several messages, as it arrives.

        The held prefix (`first`) leaves the budget only once the upstream connection has
        drained it (the client awaits the drain before it asks for the next chunk): handed
        to a transport the upstream reads slowly, it would still be in memory, up to 8 MiB
        per upload beyond the budget."""
        chunk, more = first, True
        del first  # the held prefix must not outlive its write
        if chunk:
            yield chunk
        self._release(exchange, keep=len(exchange.body))  # all but what the model scan reads
        chunk, more = await _next_chunk(receive, exchange)
        while more:
            if chunk:
                yield chunk
            chunk, more = await _next_chunk(receive, exchange)
        if chunk:
            yield chunk
        self._in_flight(exchange, bytes(exchange.body))  # the held prefix
        watch()

    async def _hold_body(self, first: bytes, receive: Receive, exchange: _Exchange) -> bool:
        """Read the body into memory before going upstream; False: it is larger than this
        request's share or the total budget, and the rest must stream."""
        chunk, more = first, True
        while True:
            exchange.body += chunk
            exchange.held += len(chunk)
            self._held += len(chunk)
            if not more:
                return True
            if len(exchange.body) >= REQUEST_INSPECT_LIMIT or self._held >= self._budget:
                return False
            chunk, more = await _next_chunk(receive, exchange)

    def eager(self, scope: Scope, body: bytes) -> bool:
        """The server's callback once a request's head and whole body are in, before the
        request's task first runs (guard.Eager): when the body fits the hold budget and an
        idle upstream connection is at hand, the request is written upstream from here.

        This is the floor's shape (bench/README.md): the upstream starts work without
        waiting for the loop to run the task (behind other streams' callbacks when it is
        busy), for the ASGI body message and for the model lookup. True: the request was
        taken over (`scope[EAGER]`; the task must not read the body); False: nothing was
        done."""
        size = len(body)
        if size >= REQUEST_INSPECT_LIMIT or self._held + size > self._budget:
            return False
        if not self._client.has_idle:
            return False  # a connect or a wait for the pool: the task's work, as before
        t0 = time.perf_counter()
        try:
            exchange = self._open(scope)
            target, headers = self._upstream_request(scope, exchange)
        except Exception:  # noqa: BLE001 - the task does it again and fails as it always did
            return False
        exchange.whole = body
        exchange.held = size
        self._held += size
        data = body or None
        begun = self._client.begin(scope["method"], target, headers, data)
        # The labels and the in-flight gauge follow in the task (`answer` calls `sent`).
        scope[EAGER] = _Early(exchange, t0, target, headers, data, begun)
        # It may leave before its task runs; the task arms its own callback (watch()).
        scope[DISCONNECTED] = partial(self._gone, exchange, None)
        return True

    def _open(self, scope: Scope) -> _Exchange:
        """A request's state, from its head."""
        path: str = scope["path"]
        exchange = _Exchange(api_for_path(path), path)
        if self._attributed:
            exchange.attrs = self._recorder.attrs(scope["headers"])
        if self._tracing is not None:
            exchange.trace = self._tracing.start(scope["headers"], scope["method"], exchange.api)
        return exchange

    def _upstream_request(
        self, scope: Scope, exchange: _Exchange
    ) -> tuple[str, list[tuple[str, str]]]:
        """The upstream request's target and headers."""
        raw_path: bytes = scope.get("raw_path") or exchange.path.encode()
        target = self._base_path + raw_path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client")
        headers = request_headers(
            scope["headers"],
            client[0] if client else None,
            scope.get("scheme", "http"),
            strip=self._strip,
        )
        if exchange.trace is not None:
            headers = exchange.trace.upstream_headers(headers)
        return target, headers

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, t0: float) -> None:
        early: _Early | None = scope.pop(EAGER, None)
        exchange = self._open(scope) if early is None else early.exchange
        task = asyncio.current_task()
        watcher: asyncio.Task[None] | None = None

        def watch() -> None:
            nonlocal watcher
            if DISCONNECTED in scope:  # the server calls back: no task waiting on receive()
                scope[DISCONNECTED] = partial(self._gone, exchange, task)
            else:
                watcher = asyncio.ensure_future(self._watch(receive, exchange, task))

        begun: Begun | None = None
        data: Body
        if early is not None:  # written upstream already, or about to be: no body to read
            t0, data, begun = early.t0, early.data, early.begun
            target, headers = early.target, early.headers
            sent: Callable[[], None] | None = partial(self._in_flight, exchange, data or b"")
            watch()
        else:
            try:
                data = await self._request_body(receive, exchange, watch)
                sent = None  # a streamed body is in flight once it has all gone (_stream_body)
                if data is None or isinstance(data, bytes):
                    sent = partial(self._in_flight, exchange, data or b"")
            except ClientStreamAborted:
                self._release(exchange)
                self._finish_early(exchange, *_gone(scope), t0)
                return
            except BaseException:  # cancelled (shutdown): the held bytes must not leak
                self._release(exchange)
                raise
            target, headers = self._upstream_request(scope, exchange)
        response: Response | None = None
        try:
            if exchange.client_gone:  # it left before this task ran (an eager request)
                if begun is not None:
                    begun.abandon()  # the upstream sees the close and stops generating
                answer: Response | Failure = _LEFT
            else:
                answer = await self._send_upstream(
                    scope["method"], target, headers, data, sent, begun
                )
            if isinstance(answer, Failure):
                if exchange.client_gone:  # the upload broke off: nobody to answer
                    self._finish_early(exchange, *_gone(scope), t0)
                else:
                    await self._upstream_failed(send, exchange, t0, answer)
                return
            response = answer
            await self._relay(response, send, exchange, t0)
        except asyncio.CancelledError:
            if task is None or not (exchange.client_gone or self.draining):
                raise
            task.uncancel()
            if exchange.client_gone:
                self._finish_early(exchange, *_gone(scope), t0)
            else:  # the drain timeout ran out before the upstream answered
                self._drain_casualty(exchange)
                await self._upstream_failed(
                    send,
                    exchange,
                    t0,
                    Failure(503, ErrorType.UPSTREAM_TIMEOUT, "infermeter is shutting down"),
                )
        except ClientStreamAborted:
            if exchange.client_gone:  # went away during the upload
                self._finish_early(exchange, *_gone(scope), t0)
                return
            raise
        finally:
            self._release(exchange)
            exchange.finished = True
            if watcher is not None:
                watcher.cancel()
            elif scope.get(DISCONNECTED) is not None:
                scope[DISCONNECTED] = None  # the callback holds this exchange and task
            if response is not None:
                response.release()
            if exchange.in_flight is not None:
                exchange.in_flight.dec()

    async def _request_body(
        self, receive: Receive, exchange: _Exchange, watch: Callable[[], None]
    ) -> Body:
        """The body to send: whole in memory when it fits, else a stream (held prefix first)."""
        first = await receive()
        if first["type"] == "http.disconnect":
            exchange.client_gone = True
            raise ClientStreamAborted("client went away before the body")
        body: bytes = first.get("body", b"")
        if first.get("more_body", False):
            if not await self._hold_body(body, receive, exchange):
                # Too big to hold: send what we have, keep only what the model scan reads
                # (the held buffer itself goes upstream: no copy of up to 8 MiB beside it).
                # It stays in the budget until the upstream has taken it (_stream_body).
                prefix = exchange.body
                exchange.body = prefix[:SCAN_LIMIT]
                return self._stream_body(prefix, receive, exchange, watch)
            body = bytes(exchange.body)
            exchange.body = bytearray()
        exchange.whole = body
        watch()
        return body or None

    def _release(self, exchange: _Exchange, keep: int = 0) -> None:
        """Give the request's share of the body budget back, all but `keep` bytes."""
        self._held -= exchange.held - keep
        exchange.held = keep

    async def _send_upstream(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        data: Body,
        sent: Callable[[], None] | None = None,
        begun: Begun | None = None,
    ) -> Response | Failure:
        """The upstream's response head, or why there is none; `sent()` runs once the
        request is written. `begun`: the request was written already (`eager`)."""
        try:
            if begun is not None:
                return await self._client.answer(begun, sent)
            return await self._client.request(method, target, headers, data, sent)
        except (ConnectTimeout, ConnectError) as exc:
            return Failure(502, ErrorType.UPSTREAM_CONNECT, str(exc))
        except PoolTimeout as exc:
            self._recorder.pool_timeout()
            return Failure(503, ErrorType.UPSTREAM_CONNECT, str(exc))
        except HeadTooLarge as exc:
            return Failure(502, ErrorType.STREAM_TRUNCATED, str(exc))
        except ReadTimeout:
            return Failure(504, ErrorType.UPSTREAM_TIMEOUT, "the upstream did not answer in time")
        except Disconnected:
            return Failure(
                502,
                ErrorType.STREAM_TRUNCATED,
                "the upstream closed the connection without answering",
            )
        except ClientStreamAborted as exc:
            return Failure(
                502, ErrorType.UPSTREAM_CONNECT, f"upstream request failed: {type(exc).__name__}"
            )

    async def _upstream_failed(
        self, send: Send, exchange: _Exchange, t0: float, failure: Failure
    ) -> None:
        status, error_type, why = failure
        body = error_body(status, error_type, why, self.upstream)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
        log.warning(
            "upstream request failed",
            extra={"error_type": error_type, "status": status, "reason": why, "api": exchange.api},
        )
        self._finish_early(exchange, status, error_type, t0)

    def _finish_early(
        self, exchange: _Exchange, code: int, error_type: ErrorType | None, t0: float
    ) -> None:
        """Count a request that ended without a relayed response (errors, disconnects)."""
        try:
            series = self._label(exchange)
            e2e = time.perf_counter() - t0
            self._recorder.count(series, code, error_type, exchange.attrs)
            series.child("e2e").observe(e2e)
            if exchange.trace is not None:
                exchange.trace.finish(code, error_type, None, e2e)
        except Exception:
            log.exception("measuring failed", extra={"error_type": ErrorType.PROXY_INTERNAL})

    async def _watch(
        self, receive: Receive, exchange: _Exchange, task: asyncio.Task[Any] | None
    ) -> None:
        """Cancel the exchange as soon as the client goes away (no leaked upstream work)."""
        message = await receive()
        if message["type"] == "http.disconnect":
            self._gone(exchange, task)

    @staticmethod
    def _gone(exchange: _Exchange, task: asyncio.Task[Any] | None) -> None:
        if not exchange.finished:
            exchange.client_gone = True
            if task is not None:
                task.cancel()

    async def _relay(self, response: Response, send: Send, exchange: _Exchange, t0: float) -> None:
        status = response.status
        content_type = response.header(b"content-type") or ""
        info = exchange.info or RequestInfo()
        streaming = content_type.startswith(STREAMING_TYPES) or (
            info.stream and exchange.api in (Api.OLLAMA_GENERATE, Api.OLLAMA_CHAT)
        )
        series = self._label(exchange)
        if 200 <= status < 300 and series.model == OTHER_MODEL:
            series = self._promote(exchange, series)
        meter: RequestMeter | None = None
        parser: StreamParser | None = None
        try:
            if 200 <= status < 300:
                parser = self._parser_for(
                    exchange.api,
                    streaming=streaming,
                    content_type=content_type,
                    content_encoding=response.header(b"content-encoding"),
                )
            meter = RequestMeter(
                t0,
                streaming,
                expects_terminal=parser is not None and parser.expects_terminal,
                on_gap=self._gap_sink(series, exchange.trace),
            )
        except Exception as error:  # noqa: BLE001 - measuring must never fail the request
            self._measuring_failed(series, error, exchange.attrs)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": response_headers(response.raw_headers),
            }
        )
        outcome = Outcome.COMPLETED
        capture = (
            exchange.trace if exchange.trace is not None and exchange.trace.capturing else None
        )
        measure = _Measure(self, meter, parser, capture, series, exchange.attrs)
        cycle = relay_cycle(send)
        try:
            try:
                if cycle is not None and cycle.chunked_encoding and not cycle.disconnected:
                    response.relay(_Relay(cycle, response, measure, self._deferred))
                    while not await response.relayed():  # False: the client is behind
                        await cycle.flow.drain()
                        response.resume()
                else:
                    await _pump(response, send, measure)
            finally:
                response.unrelay()
                self._deferred.flush()  # this response's chunks are measured before it ends
                meter, parser = measure.meter, measure.parser  # what is left to measure
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except Disconnected:
            outcome = Outcome.UPSTREAM_RESET
        except ReadTimeout:
            outcome = Outcome.UPSTREAM_TIMEOUT
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or not (exchange.client_gone or self.draining):
                raise
            task.uncancel()
            if exchange.client_gone:
                outcome = Outcome.CLIENT_DISCONNECT
            else:  # the drain timeout ran out mid-stream: end the response cleanly
                self._drain_casualty(exchange)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        end = time.perf_counter()
        self._record(series, meter, parser, end, status, outcome, exchange, end - t0)
        if outcome in (Outcome.UPSTREAM_RESET, Outcome.UPSTREAM_TIMEOUT):
            log.warning(
                "upstream stream ended early",
                extra={"outcome": outcome.value, "api": exchange.api, "status": status},
            )
            raise ClientStreamAborted(outcome.value)

    def _record(
        self,
        series: Series,
        meter: RequestMeter | None,
        parser: StreamParser | None,
        end: float,
        status: int,
        outcome: Outcome,
        exchange: _Exchange,
        e2e: float,
    ) -> None:
        code = CLIENT_CLOSED if outcome is Outcome.CLIENT_DISCONNECT else status
        trace, attrs = exchange.trace, exchange.attrs
        record = None
        try:
            if meter is None:
                self._recorder.count(series, code, None, attrs)
            else:
                if parser is not None:
                    for observation in parser.close():
                        meter.observe(observation, end)
                record = meter.finish(end, status=status, outcome=outcome)
                self._recorder.count(series, code, record.error_type, attrs)
                exemplar = trace.exemplar if trace else None
                self._recorder.observe(series, record, exemplar, attrs, exchange.price)
            if trace is not None:
                error = record.error_type if record is not None else None
                trace.finish(code, error, record, e2e)
        except Exception as error:  # noqa: BLE001
            self._measuring_failed(series, error, attrs)

    @staticmethod
    def _gap_sink(series: Series, trace: RequestTrace | None) -> Callable[[float, int], None]:
        """Where ITL gaps go as they happen: the histogram, plus exemplar and OTLP metric."""
        if trace is None:
            return series.gap
        exemplar = trace.exemplar

        def gap(seconds: float, k: int) -> None:
            series.gap(seconds, k, exemplar)
            trace.gap(seconds)

        return gap

    def _promote(self, exchange: _Exchange, series: Series) -> Series:
        """A 2xx for a model without a slot: give it one if free, and move this request
        (also when a concurrent first request of the same model just got the slot)."""
        info = exchange.info
        if info is None or not info.model:
            return series
        self._recorder.admit(info.model)
        promoted = self._recorder.series(info.model, exchange.api)
        if promoted is series:
            return series
        exchange.series = promoted
        if exchange.trace is not None:
            exchange.trace.relabel(promoted.model)
        if exchange.in_flight is not None:
            exchange.in_flight.dec()
            exchange.in_flight = promoted.child("in_flight")
            exchange.in_flight.inc()
        return promoted

    def _drain_casualty(self, exchange: _Exchange) -> None:
        self.drain_aborted += 1
        self._label(exchange).child("drain_aborted").inc()

    def _measuring_failed(self, series: Series, error: Exception, attrs: Attrs = ()) -> None:
        """Log and count a bug in measuring; the request's bytes keep flowing."""
        log.error(
            "measuring failed", exc_info=error, extra={"error_type": ErrorType.PROXY_INTERNAL}
        )
        self._recorder.error(series, ErrorType.PROXY_INTERNAL, attrs)


class _Measure:
    """What the proxy measures of a response body, chunk by chunk, whichever way the chunk
    went to the client: the trace's content capture, the first byte, the stream parser and
    the meter. It never raises (it may run inside the upstream protocol's data_received): a
    failure is counted once and measuring stops for this request."""

    __slots__ = ("app", "attrs", "capture", "first", "meter", "parser", "series")

    def __init__(
        self,
        app: ProxyApp,
        meter: RequestMeter | None,
        parser: StreamParser | None,
        capture: RequestTrace | None,
        series: Series,
        attrs: Attrs,
    ) -> None:
        self.app = app
        self.meter = meter
        self.parser = parser
        self.capture = capture
        self.series = series
        self.attrs = attrs
        self.first = True

    def __call__(self, chunk: bytes, now: float) -> None:
        meter = self.meter
        try:
            if self.capture is not None:
                self.capture.response_bytes(chunk)
            if meter is None:
                return
            if self.first:
                meter.first_byte(now)
                self.first = False
            parser = self.parser
            if parser is not None:
                outputs, observations = parser.feed_outputs(chunk)
                if outputs:
                    meter.outputs(outputs, now)
                for observation in observations:
                    meter.observe(observation, now)
        except Exception as error:  # noqa: BLE001 - measuring must never fail the request
            self.app._measuring_failed(self.series, error, self.attrs)
            self.meter = self.parser = None


class _Relay:
    """The sink of a relayed response: called by the upstream connection with each body
    chunk as it is parsed, it writes the chunk to the client (chunked framing) and hands
    it, with its arrival time, to the next measuring batch (`Deferred`); no ASGI message,
    no task wake-up. When the client's transport asks to pause writing, the upstream stops
    being read (`Response.hold`) until the request task has seen the client drain. It never
    raises (it runs inside the upstream protocol's data_received)."""

    __slots__ = ("closing", "cycle", "defer", "flow", "measure", "response", "write")

    def __init__(
        self, cycle: RequestResponseCycle, response: Response, measure: _Measure, later: Deferred
    ) -> None:
        self.cycle = cycle
        self.defer = later.add
        self.flow = cycle.flow
        self.write = cycle.transport.write
        self.closing = cycle.transport.is_closing
        self.response = response
        self.measure = measure

    def __call__(self, chunk: bytes) -> None:
        now = time.perf_counter()
        if not chunk:
            return  # an empty chunk would end the chunked response
        # Closed but not yet told (uvicorn answered 400 to pipelined garbage, say): a write
        # would raise inside the upstream's data_received.
        if not self.cycle.disconnected and not self.closing():
            self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            if self.flow.write_paused:
                self.response.hold()
        self.defer(self.measure, chunk, now)


async def _pump(response: Response, send: Send, measure: _Measure) -> None:
    """The body as ASGI messages, one per chunk read (a response that is not chunked, or a
    server other than uvicorn's httptools one)."""
    read = response.read
    while chunk := await read():
        now = time.perf_counter()
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        measure(chunk, now)


async def _next_chunk(receive: Receive, exchange: _Exchange) -> tuple[bytes, bool]:
    """The next piece of the request body and whether more follows."""
    message = await receive()
    if message["type"] == "http.disconnect":
        exchange.client_gone = True
        raise ClientStreamAborted("client went away during the upload")
    return message.get("body", b""), message.get("more_body", False)


def _gone(scope: Scope) -> tuple[int, ErrorType | None]:
    """Status and error type of a request the client left: 499, or what the server
    answered when it cut the request itself (guard.py): 408 when the upload stalled
    (still the client's failure), 400 for a malformed body (no error of ours)."""
    code = scope.get(REJECTED)
    if code == 400:
        return 400, None
    return (code if isinstance(code, int) else CLIENT_CLOSED), ErrorType.CLIENT_DISCONNECT
