"""Sidecar memory with many streams open at once: RSS idle, then with N streams in flight.

Each stream is a real request through the sidecar that the demo upstream keeps open (its
first token is due only after the measurement), so every stream holds what a real one holds:
a client connection, an upstream connection, the request's task and meter. "In flight" is
read from the upstream's own count (`/demo/stats`), not from the sidecar's sockets: its
keep-alive pool may hold idle upstream connections from earlier load.
"""

from __future__ import annotations

import asyncio
import time

from bench.tree import tree_rss
from harness import http_client
from harness.loadgen import request_bytes

HELD_TTFT = 600.0  # the upstream's first token: far later than any measurement


async def rss_with_open_streams(
    proxy_port: int, pid: int, upstream: str, streams: int, wait: float = 60.0
) -> dict[str, float | int]:
    idle = tree_rss(pid)  # the supervisor and its workers
    request = request_bytes(HELD_TTFT, 0.01, 2)
    connections = []
    opened = time.monotonic()
    for _ in range(streams):
        connections.append(await asyncio.open_connection("127.0.0.1", proxy_port))
    for _, writer in connections:
        writer.write(request)
        await writer.drain()
    async with http_client.AsyncClient(base_url=upstream, timeout=5) as client:
        in_flight = 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            in_flight = (await client.get("/demo/stats")).json()["in_flight"]
            if in_flight >= streams:
                break
            await asyncio.sleep(0.05)
        settled = time.monotonic() - opened
        loaded = tree_rss(pid)
        for _, writer in connections:
            writer.close()
        # let the cancellations reach the upstream before the next section uses it
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if (await client.get("/demo/stats")).json()["in_flight"] == 0:
                break
            await asyncio.sleep(0.1)
    return {
        "streams": streams,
        "streams_in_flight": in_flight,
        "seconds_to_open": round(settled, 2),
        "rss_idle_mb": round(idle / 2**20, 1),
        "rss_open_mb": round(loaded / 2**20, 1),
        "kb_per_stream": round((loaded - idle) / max(1, in_flight) / 1024, 1),
    }
