"""Soak: many requests with faults mixed in, through the real sidecar; nothing may leak.

`make soak` runs 50,000 requests; the test suite runs a short version. Every tenth request
is a fault: a client that hangs up mid-stream, one that gives up before the first token,
a request the upstream rejects (400), or one for a path it does not serve (404). After a
warm-up, open file descriptors, asyncio tasks and connections to the upstream must come
back to where they were, and resident memory may grow by less than 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import psutil

from harness import http_client
from harness.loadgen import request_bytes
from harness.sidecar import Sidecar, demo_upstream, run_sidecar, value

RESULTS = Path(__file__).parent / "results"
GOOD = request_bytes(0.002, 0.001, 8, usage=True)
BAD_JSON = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
    b"Content-Length: 9\r\n\r\n{not json"
)
NOT_FOUND = b"GET /v1/nothing-here HTTP/1.1\r\nHost: soak\r\n\r\n"
SLOW = request_bytes(5.0, 0.001, 8)


async def read_response(reader: asyncio.StreamReader) -> None:
    """Read one response to its end (chunked SSE or Content-Length JSON)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))


async def one(host: str, port: int, kind: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if kind == "good":
            writer.write(GOOD)
            await read_response(reader)
        elif kind == "bad_json":
            writer.write(BAD_JSON)
            await read_response(reader)
        elif kind == "not_found":
            writer.write(NOT_FOUND)
            await read_response(reader)
        elif kind == "hang_up_mid_stream":
            writer.write(request_bytes(0.002, 0.05, 50))
            await reader.readuntil(b"\n\n")  # the role chunk, then leave
        elif kind == "give_up_early":
            writer.write(SLOW)
            await asyncio.sleep(0.01)
    finally:
        writer.close()


async def drive(port: int, requests: int, concurrency: int, seed: int) -> None:
    rng = random.Random(seed)
    faults = ["bad_json", "not_found", "hang_up_mid_stream", "give_up_early"]
    kinds = ["good" if i % 10 else rng.choice(faults) for i in range(requests)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for kind in kinds:
        queue.put_nowait(kind)

    async def worker() -> None:
        while not queue.empty():
            await one("127.0.0.1", port, queue.get_nowait())

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def snapshot(sidecar: Sidecar, upstream_port: int) -> dict[str, float]:
    proc = psutil.Process(sidecar.proc.pid)
    text = sidecar.metrics()
    upstream_conns = [
        c for c in proc.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == upstream_port and c.status == psutil.CONN_ESTABLISHED
    ]  # fmt: skip
    return {
        "open_fds": float(proc.num_fds()),
        "rss_bytes": float(proc.memory_info().rss),
        "tasks": value(text, "infermeter_event_loop_tasks") or 0.0,
        "upstream_connections": float(len(upstream_conns)),
    }


def settle(sidecar: Sidecar, upstream_port: int) -> dict[str, float]:
    """Let idle keep-alive connections expire and one task count pass (5 s)."""
    time.sleep(5.5)
    return snapshot(sidecar, upstream_port)


def run(requests: int, concurrency: int = 32, seed: int = 7) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with (
            demo_upstream(work) as upstream,
            run_sidecar(work, "--no-gpu-metrics", upstream=upstream) as sidecar,
        ):
            up_port = int(upstream.rsplit(":", 1)[1])
            port = int(sidecar.proxy_url.rsplit(":", 1)[1])
            warmup = max(200, requests // 10)
            asyncio.run(drive(port, warmup, concurrency, seed))
            before = settle(sidecar, up_port)
            started = time.monotonic()
            asyncio.run(drive(port, requests, concurrency, seed + 1))
            seconds = time.monotonic() - started
            after = settle(sidecar, up_port)
            text = http_client.get(sidecar.url + "/metrics").text
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("infermeter_requests_total{")
    )
    return {
        "benchmark": "soak",
        "requests": requests,
        "seconds": round(seconds, 1),
        "requests_counted": total,
        "before": before,
        "after": after,
        "rss_growth_ratio": round(after["rss_bytes"] / before["rss_bytes"] - 1, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args()
    result = run(args.requests)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
