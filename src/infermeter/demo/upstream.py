"""Demo upstream: a simulated OpenAI-compatible inference server that behaves like vLLM.

Users run it to check their Prometheus/Grafana wiring without a GPU; our tests and benchmarks
put it behind the proxy as the "inference server". It streams filler tokens on a schedule
(TTFT, then one token every ITL, on absolute monotonic deadlines so event-loop load does not
make it drift) and can be retimed per request (`x-demo-*` headers) or at runtime
(`POST /demo/config`), which is how the alerting tests switch latency mid-run.

It runs on aiohttp rather than Starlette (a thinner stack per request), and token chunks
bypass even aiohttp's per-write path: a 1 ms timer wheel (`_Pacer`) writes every stream due in
a slot from one callback, so one process can feed a thousand streams (see `_Pacer`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import random
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from infermeter.demo.engine_metrics import EngineFigures
from infermeter.demo.wire import (
    DONE,
    Api,
    BadRequest,
    ChunkEncoder,
    Plan,
    output_text,
    plan_request,
    usage,
)

if TYPE_CHECKING:
    from infermeter.settings import HostPort

log = logging.getLogger("infermeter.demo.upstream")  # also when run as __main__

TUNABLE: Final = ("ttft", "itl", "output_tokens", "jitter", "kv_capacity")
"""Fields `POST /demo/config` may change at runtime; `model` and `seed` are fixed at start."""

# Large enough for long-context prompts; aiohttp's 1 MiB default would 413 a 300k-word prompt.
_MAX_BODY: Final = 64 * 1024 * 1024


def _number(name: str, value: object, *, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0 <= value <= upper:  # also rejects NaN
        bound = f"between 0 and {upper:g}" if upper != math.inf else ">= 0 and finite"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    if value == math.inf:
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class DemoConfig:
    """Timing and output of the simulated server; validated so a bad value fails loudly."""

    ttft: float = 0.2
    """Seconds from request arrival to the first output token."""
    itl: float = 0.02
    """Seconds between consecutive output tokens."""
    output_tokens: int = 64
    """Tokens generated when the request sets no lower max_tokens."""
    jitter: float = 0.0
    """Each delay is multiplied by uniform(1 - jitter, 1 + jitter); 0 <= jitter <= 1."""
    model: str = "demo-model"
    """Listed by /v1/models and used when a request names no model."""
    seed: int | None = None
    """Seeds jitter and response ids, for reproducible runs; None: not reproducible."""
    kv_capacity: int = 32
    """Sequences per model the simulated KV cache holds (the /metrics figures only)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttft", _number("ttft", self.ttft))
        object.__setattr__(self, "itl", _number("itl", self.itl))
        object.__setattr__(self, "jitter", _number("jitter", self.jitter, upper=1.0))
        _count("output_tokens", self.output_tokens)
        _count("kv_capacity", self.kv_capacity)
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(slots=True)
class _Live:
    """Mutable per-app state: the current config (replaced whole, never mutated) and counters."""

    config: DemoConfig
    rng: random.Random
    in_flight: int = 0
    requests: int = 0
    disconnects: int = 0
    engine: EngineFigures = dataclasses.field(default_factory=EngineFigures)
    _pacers: dict[asyncio.AbstractEventLoop, _Pacer] = dataclasses.field(default_factory=dict)

    def pacer_for(self, loop: asyncio.AbstractEventLoop) -> _Pacer:
        """One pacer per event loop (an app may be served by tests on several in turn)."""
        pacer = self._pacers.get(loop)
        if pacer is None:
            self._pacers = {loop: _Pacer(loop)}  # forget loops that are gone
            pacer = self._pacers[loop]
        return pacer


_LIVE: Final = web.AppKey("infermeter_demo_live", _Live)


@dataclass(frozen=True, slots=True)
class _Timing:
    ttft: float
    itl: float
    tokens: int
    stamp: bool


def _header_override(headers: Mapping[str, str], config: DemoConfig) -> _Timing:
    """Per-request `x-demo-*` overrides, so one server can serve tests with different timing."""
    values: dict[str, Any] = {}
    for header, field in (("x-demo-ttft", "ttft"), ("x-demo-itl", "itl")):
        raw = headers.get(header)
        if raw is not None:
            try:
                values[field] = _number(header, float(raw))
            except ValueError:
                raise BadRequest(f"{header} must be a finite number >= 0, got {raw!r}") from None
    raw = headers.get("x-demo-tokens")
    if raw is not None:
        try:
            values["tokens"] = _count("x-demo-tokens", int(raw))
        except ValueError:
            raise BadRequest(f"x-demo-tokens must be an integer >= 1, got {raw!r}") from None
    stamp = headers.get("x-demo-stamp", "").strip().lower() in ("1", "true")
    return _Timing(
        ttft=values.get("ttft", config.ttft),
        itl=values.get("itl", config.itl),
        tokens=values.get("tokens", config.output_tokens),
        stamp=stamp,
    )


def _error(message: str) -> web.Response:
    """A 400 in the OpenAI/vLLM error shape, so clients raise their usual BadRequestError."""
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    return web.json_response(body, status=400)


def _response_id(api: Api, rng: random.Random) -> str:
    prefix = "chatcmpl-" if api == "chat" else "cmpl-"
    return f"{prefix}{rng.getrandbits(128):032x}"


def _delays(ttft: float, itl: float, jitter: float, rng: random.Random) -> Callable[[int], float]:
    """Delay before token i (ttft for i == 0, else itl), each jittered independently."""
    if not jitter:
        return lambda i: itl if i else ttft
    lo, hi = 1.0 - jitter, 1.0 + jitter
    return lambda i: (itl if i else ttft) * rng.uniform(lo, hi)


async def _read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise BadRequest(f"Invalid JSON body: {exc}") from None


async def _generate(request: web.Request, api: Api) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    t_start = loop.time()
    live = request.app[_LIVE]
    config = live.config
    try:
        body = await _read_json(request)
        timing = _header_override(request.headers, config)
        plan = plan_request(api, body, natural_tokens=timing.tokens, default_model=config.model)
    except BadRequest as exc:
        return _error(str(exc))
    delay = _delays(timing.ttft, timing.itl, config.jitter, live.rng)
    live.requests += 1
    live.in_flight += 1
    live.engine.admit(plan.model, plan.prompt_tokens, config.kv_capacity)
    try:
        if plan.stream:
            return await _stream(request, plan, timing, delay, t_start)
        return await _complete(plan, delay, t_start, live.rng)
    except asyncio.CancelledError:
        # The client went away (make_app sets handler_cancellation, so aiohttp cancels this
        # task at once, even mid-TTFT) or the server is stopping: stop generating now.
        # Counted as a disconnect either way (at shutdown nobody reads the count).
        live.disconnects += 1
        raise
    finally:
        live.in_flight -= 1
        live.engine.release(plan.model)


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    await asyncio.sleep(delay if delay > 0 else 0)


class _Pacer:
    """Wakes token emitters in 1 ms slots: one timer per slot instead of one sleep per token.

    A sleep-then-write loop per stream costs, per token, a future, a timer handle, a task
    wake-up and aiohttp's write path; a slot callback writing straight to the transport
    measured ~25% less CPU per token and a far smaller lateness (500 streams at 20 ms: p50
    0.5 ms instead of 3-26 ms). What remains is mostly the send() system call itself.
    1 ms is the resolution of uvloop's timers anyway; deadlines round to the nearest slot,
    so a token is never more than 0.5 ms early or late on that account.
    """

    __slots__ = ("_loop", "_slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, list[_Emitter]] = {}

    def at(self, deadline: float, emitter: _Emitter) -> None:
        slot = round(deadline * 1000.0)
        waiting = self._slots.get(slot)
        if waiting is None:
            self._slots[slot] = [emitter]
            self._loop.call_at(slot / 1000.0, self._fire, slot)
        else:
            waiting.append(emitter)

    def _fire(self, slot: int) -> None:
        for emitter in self._slots.pop(slot):
            try:
                emitter.step()
            except Exception as exc:  # noqa: BLE001 - raised by its request task, not lost
                # One broken stream must not stall the others in this slot.
                if not emitter.done.done():
                    emitter.done.set_exception(exc)


# A reader that stops reading gets no more than this buffered; its stream then waits (and
# goes late), as a real server's does behind a slow client.
_WRITE_BUFFER_LIMIT: Final = 256 * 1024
_BACKPRESSURE_RETRY: Final = 0.01


class _Emitter:
    """Writes one stream's token chunks from pacer callbacks; the request task awaits `done`.

    Writes go to the transport with the same framing aiohttp would use (HTTP/1.1 chunked,
    else raw), skipping its per-write Python overhead. Head, first chunk and end go through
    aiohttp's StreamResponse, so its state stays consistent.
    """

    __slots__ = (
        "_chunked",
        "_chunks",
        "_deadline",
        "_delay",
        "_i",
        "_loop",
        "_n",
        "_pacer",
        "_stamp",
        "_transport",
        "done",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pacer: _Pacer,
        transport: asyncio.Transport,
        chunks: ChunkEncoder,
        n: int,
        delay: Callable[[int], float],
        *,
        chunked: bool,
        stamp: bool,
    ) -> None:
        self._loop = loop
        self._pacer = pacer
        self._transport = transport
        self._chunks = chunks
        self._n = n
        self._delay = delay
        self._chunked = chunked
        self._stamp = stamp
        self._i = 0
        self._deadline = 0.0
        self.done: asyncio.Future[None] = loop.create_future()

    def start(self, t_start: float) -> None:
        self._deadline = t_start + self._delay(0)
        self._pacer.at(self._deadline, self)

    def step(self) -> None:
        if self.done.done():  # finished, or cancelled with its request task (disconnect)
            return
        transport = self._transport
        if transport.is_closing():
            self.done.set_exception(ConnectionResetError("client closed the connection"))
            return
        if transport.get_write_buffer_size() > _WRITE_BUFFER_LIMIT:
            self._pacer.at(self._loop.time() + _BACKPRESSURE_RETRY, self)
            return
        i = self._i
        data = self._chunks.token(i, time.time_ns() if self._stamp else 0)
        transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        i += 1
        self._i = i
        if i == self._n:
            self.done.set_result(None)
            return
        self._deadline += self._delay(i)
        # Late (overloaded loop): still goes through the pacer, so others get their turn.
        self._pacer.at(self._deadline, self)


async def _stream(
    request: web.Request,
    plan: Plan,
    timing: _Timing,
    delay: Callable[[int], float],
    t_start: float,
) -> web.StreamResponse:
    live = request.app[_LIVE]
    chunks = ChunkEncoder(
        plan, _response_id(plan.api, live.rng), int(time.time()), stamp=timing.stamp
    )
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    chunked = request.version >= (1, 1)
    if chunked:
        response.enable_chunked_encoding()  # what aiohttp does anyway; now we know it
    await response.prepare(request)  # sends the head now, as uvicorn does for vLLM
    stamp = timing.stamp
    transport = request.transport
    emitter: _Emitter | None = None
    try:
        if plan.api == "chat":
            await response.write(chunks.role(time.time_ns() if stamp else 0))
        if transport is None:
            raise ConnectionResetError("client closed the connection")
        loop = asyncio.get_running_loop()
        emitter = _Emitter(
            loop,
            live.pacer_for(loop),
            transport,
            chunks,
            plan.completion_tokens,
            delay,
            chunked=chunked,
            stamp=stamp,
        )
        emitter.start(t_start)
        await emitter.done
        if plan.include_usage:
            await response.write(chunks.usage(time.time_ns() if stamp else 0))
        await response.write_eof(DONE)
    except ConnectionResetError:
        # The client closed the connection (seen on write when the app runs without
        # handler_cancellation): stop quietly; this is the client's choice, not our error.
        live.disconnects += 1
    finally:
        if emitter is not None:
            emitter.done.cancel()  # no-op when finished; else its pending slot does nothing
    return response


async def _complete(
    plan: Plan, delay: Callable[[int], float], t_start: float, rng: random.Random
) -> web.Response:
    loop = asyncio.get_running_loop()
    deadline = t_start + sum(delay(i) for i in range(plan.completion_tokens))
    await _sleep_until(loop, deadline)
    text = output_text(plan.completion_tokens)
    choice: dict[str, object]
    if plan.api == "chat":
        kind = "chat.completion"
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": []}}
    else:
        kind = "text_completion"
        choice = {"index": 0, "text": text}
    choice.update(logprobs=None, finish_reason=plan.finish_reason, stop_reason=None)
    body = {
        "id": _response_id(plan.api, rng),
        "object": kind,
        "created": int(time.time()),
        "model": plan.model,
        "choices": [choice],
        "usage": usage(plan.prompt_tokens, plan.completion_tokens),
    }
    return web.json_response(body)


async def _chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completions")


async def _models(request: web.Request) -> web.Response:
    model = request.app[_LIVE].config.model
    card = {
        "id": model,
        "object": "model",
        "created": int(time.time()),
        "owned_by": "infermeter-demo",
        "root": model,
        "parent": None,
    }
    return web.json_response({"object": "list", "data": [card]})


async def _health(request: web.Request) -> web.Response:
    return web.Response()  # vLLM: 200, empty body


async def _get_config(request: web.Request) -> web.Response:
    return web.json_response(dataclasses.asdict(request.app[_LIVE].config))


async def _post_config(request: web.Request) -> web.Response:
    """Partial update of the timing of later requests; in-flight ones keep theirs."""
    live = request.app[_LIVE]
    try:
        body = await _read_json(request)
    except BadRequest as exc:
        return _error(str(exc))
    if not isinstance(body, dict):
        return _error('expected a JSON object, e.g. {"ttft": 0.5}')
    unknown = sorted(set(body) - set(TUNABLE))
    if unknown:
        return _error(f"unknown field(s) {', '.join(unknown)}; settable: {', '.join(TUNABLE)}")
    try:
        updated = dataclasses.replace(live.config, **body)
    except ValueError as exc:
        return _error(str(exc))
    live.config = updated
    log.info("demo upstream config updated", extra={k: getattr(updated, k) for k in TUNABLE})
    return web.json_response(dataclasses.asdict(updated))


async def _metrics(request: web.Request) -> web.Response:
    """vLLM-shaped engine metrics that follow the load (see demo/engine_metrics.py)."""
    live = request.app[_LIVE]
    text = live.engine.render(live.config.kv_capacity)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _version(request: web.Request) -> web.Response:
    from infermeter import __version__

    return web.json_response({"version": f"infermeter-demo-{__version__}"})  # as vLLM's /version


async def _stats(request: web.Request) -> web.Response:
    """Counters for tests and benchmarks, e.g. that a disconnect really stopped a stream."""
    live = request.app[_LIVE]
    return web.json_response(
        {"in_flight": live.in_flight, "requests": live.requests, "disconnects": live.disconnects}
    )


def make_app(config: DemoConfig) -> web.Application:
    """The demo upstream as an aiohttp app, for in-process use (tests, benchmarks)."""
    app = web.Application(
        client_max_size=_MAX_BODY,
        # Cancel the handler when the client disconnects (stop generating at once) and keep
        # the access log off: at thousands of requests per second it would cost more than
        # the server. Set here, not on the runner, so every way of serving the app gets them.
        handler_args={"handler_cancellation": True, "access_log": None},
    )
    app[_LIVE] = _Live(config=config, rng=random.Random(config.seed))
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/version", _version)
    app.router.add_get("/demo/config", _get_config)
    app.router.add_post("/demo/config", _post_config)
    app.router.add_get("/demo/stats", _stats)
    return app


def _arg(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = convert.__name__
    return parse


def _listen(text: str) -> HostPort:
    from infermeter.settings import parse_host_port  # late: pydantic makes --help slow

    return parse_host_port(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `infermeter demo-upstream` (and `python -m infermeter.demo.upstream`)."""
    d = DemoConfig()
    parser.add_argument(
        "--listen",
        type=_arg(_listen),
        default="127.0.0.1:8000",
        metavar="HOST:PORT",
        help="Address to serve on. Default: 127.0.0.1:8000 (vLLM's port).",
    )
    parser.add_argument(
        "--ttft",
        type=_arg(lambda s: _number("ttft", float(s))),
        default=d.ttft,
        metavar="SECONDS",
        help=f"Time to first token. Default: {d.ttft}.",
    )
    parser.add_argument(
        "--itl",
        type=_arg(lambda s: _number("itl", float(s))),
        default=d.itl,
        metavar="SECONDS",
        help=f"Inter-token latency. Default: {d.itl}.",
    )
    parser.add_argument(
        "--output-tokens",
        type=_arg(lambda s: _count("output-tokens", int(s))),
        default=d.output_tokens,
        metavar="N",
        help=f"Tokens per response unless max_tokens is lower. Default: {d.output_tokens}.",
    )
    parser.add_argument(
        "--jitter",
        type=_arg(lambda s: _number("jitter", float(s), upper=1.0)),
        default=d.jitter,
        metavar="FRACTION",
        help="Multiply each delay by uniform(1-j, 1+j), 0 <= j <= 1. Default: 0.",
    )
    parser.add_argument(
        "--model",
        default=d.model,
        help=f"Model listed by /v1/models, used when a request names none. Default: {d.model}.",
    )
    parser.add_argument(
        "--kv-capacity",
        type=_arg(lambda s: _count("kv-capacity", int(s))),
        default=d.kv_capacity,
        metavar="N",
        help="Sequences per model the simulated KV cache holds: /metrics shows requests "
        f"beyond it waiting, a full cache and preemptions. Default: {d.kv_capacity}.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="Seed for jitter and response ids (reproducible runs). Default: random.",
    )


def _config_from(args: argparse.Namespace) -> DemoConfig:
    return DemoConfig(
        ttft=args.ttft,
        itl=args.itl,
        output_tokens=args.output_tokens,
        jitter=args.jitter,
        model=args.model,
        seed=args.seed,
        kv_capacity=args.kv_capacity,
    )


async def _serve(app: web.Application, sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # In-flight streams get a second to finish on shutdown, then are cut, like a dying server.
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "demo upstream serving",
            extra={"url": f"http://{shown}:{port}/v1", "model": app[_LIVE].config.model},
        )
        await stop.wait()
    finally:
        await runner.cleanup()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; 0 then, 1 when the address cannot be bound."""
    from infermeter.net import StartupError, bind

    config = _config_from(args)
    listen = args.listen if not isinstance(args.listen, str) else _listen(args.listen)
    try:
        sock = bind("--listen", listen)
    except StartupError as exc:
        print(f"infermeter: {exc}", file=sys.stderr)
        return 1
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # optional (not on Windows): asyncio's loop works, a little slower
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(make_app(config), sock))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infermeter.demo.upstream",
        description="Simulated OpenAI-compatible inference server (vLLM wire format).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from infermeter import logs

    logs.configure("plain", "info")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
