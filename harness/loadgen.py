"""A lean streaming load generator: raw asyncio sockets, keep-alive, client-side timing.

Raw sockets keep the client's own overhead (which an HTTP library would add to every
figure) out of the comparison between paths. It speaks just enough HTTP/1.1 for the demo
upstream's chunked SSE responses, and reads the per-event send stamps (`x-demo-stamp`).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from dataclasses import dataclass, field

STAMP = re.compile(rb'"demo_sent_ns":(\d+)')


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)  # seconds, request sent -> first token
    gaps: list[float] = field(default_factory=list)  # seconds between token events
    delays: list[float] = field(default_factory=list)  # seconds, upstream send -> received
    late: list[float] = field(default_factory=list)  # open loop: arrival sent after schedule
    requests: int = 0
    errors: int = 0


def request_bytes(ttft: float, itl: float, tokens: int, usage: bool = False) -> bytes:
    payload: dict[str, object] = {
        "model": "bench",
        "stream": True,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "hello"}],
    }
    if usage:
        payload["stream_options"] = {"include_usage": True}
    body = json.dumps(payload).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        "Content-Type: application/json\r\n"
        f"x-demo-ttft: {ttft}\r\nx-demo-itl: {itl}\r\nx-demo-stamp: 1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: bytes,
    sample: Sample,
    sent: float | None = None,
) -> bool:
    """One request on a keep-alive connection; False when the connection broke."""
    sent = time.perf_counter() if sent is None else sent
    writer.write(request)
    buffer = b""
    first = last = None
    head = True
    while True:
        data = await reader.read(65536)
        if not data:
            sample.errors += 1
            return False
        now, wall = time.perf_counter(), time.time_ns()
        buffer += data
        if head:
            if len(buffer) < 12:
                continue
            if buffer[9:12] != b"200":  # an error response has no [DONE] to wait for
                sample.errors += 1
                return False
            head = False
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            if b"[DONE]" in event:
                # the chunked terminator follows [DONE]: read it so the next request is clean
                while not (buffer + event).endswith(b"0\r\n\r\n") and b"0\r\n\r\n" not in buffer:
                    more = await reader.read(65536)
                    if not more:
                        break
                    buffer += more
                sample.requests += 1
                return True
            match = STAMP.search(event)
            if match is None or b'"role"' in event or b'"content"' not in event:
                continue
            sample.delays.append((wall - int(match.group(1))) / 1e9)
            if first is None:
                first = now
                sample.ttft.append(now - sent)
            else:
                assert last is not None
                sample.gaps.append(now - last)
            last = now


async def run_load(
    host: str, port: int, streams: int, per_stream: int, request: bytes, stagger: float = 0.0
) -> Sample:
    """`streams` connections, each running `per_stream` requests back to back; stream k
    starts k * `stagger` seconds late, so streams do not arrive in lockstep."""
    sample = Sample()
    connections = await asyncio.gather(
        *(asyncio.open_connection(host, port) for _ in range(streams))
    )

    async def worker(k: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(k * stagger)
        for _ in range(per_stream):
            await one_stream(reader, writer, request, sample)
        writer.close()

    await asyncio.gather(*(worker(k, r, w) for k, (r, w) in enumerate(connections)))
    return sample


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_open_loop(
    host: str,
    port: int,
    rate: float,
    duration: float,
    request: bytes,
    seed: int = 1,
    arrivals: str = "poisson",
) -> Sample:
    """Arrivals at `rate` requests/s for `duration` s (Poisson, or evenly spaced with
    `arrivals="fixed"`), whatever the responses do.

    Arrivals are scheduled in advance and TTFT is counted from the scheduled time, not from
    when a connection happened to be free, so a slow path cannot slow down its own load
    (no coordinated omission). Each arrival takes an idle keep-alive connection or opens one.
    How late this client itself sent each arrival goes to `late`: when that grows, the load
    generator, not the path, is behind.
    """
    if arrivals not in ("poisson", "fixed"):
        raise ValueError(f"arrivals must be 'poisson' or 'fixed', got {arrivals!r}")
    rng = random.Random(seed)
    sample = Sample()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    loop = asyncio.get_running_loop()
    schedule: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate) if arrivals == "poisson" else 1.0 / rate
        if t >= duration:
            break
        schedule.append(t)
    start = loop.time() + 0.05  # every task is created before the first arrival is due

    async def one(at: float) -> None:
        await asyncio.sleep(max(0.0, start + at - loop.time()))
        late = max(0.0, loop.time() - (start + at))
        sample.late.append(late)
        scheduled = time.perf_counter() - late
        conn = idle.pop() if idle else await asyncio.open_connection(host, port)
        if await one_stream(*conn, request, sample, sent=scheduled):
            idle.append(conn)
        else:
            conn[1].close()

    await asyncio.gather(*(one(at) for at in schedule))
    for _, writer in idle:
        writer.close()
    return sample
