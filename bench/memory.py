"""Sidecar memory with many streams open at once: RSS idle, then with N streams in flight.

Each stream is a real request through the sidecar that the demo upstream keeps open (a
long first-token delay), so every stream holds what a real one holds: a client connection,
an upstream connection, the request's task and meter.
"""

from __future__ import annotations

import asyncio
import time

import psutil

from bench.loadgen import request_bytes


async def rss_with_open_streams(
    proxy_port: int, pid: int, streams: int, hold: float
) -> dict[str, float | int]:
    process = psutil.Process(pid)
    idle = process.memory_info().rss
    request = request_bytes(hold, 0.01, 2)
    connections = []
    for _ in range(streams):
        connections.append(await asyncio.open_connection("127.0.0.1", proxy_port))
    for _, writer in connections:
        writer.write(request)
        await writer.drain()
    # wait until every request is in flight at the upstream (the sidecar has read them all)
    deadline = time.monotonic() + hold
    while time.monotonic() < deadline:
        if _upstream_connections(process) >= streams:
            break
        await asyncio.sleep(0.05)
    in_flight = _upstream_connections(process)
    loaded = process.memory_info().rss
    for _, writer in connections:
        writer.close()
    return {
        "streams": streams,
        "streams_in_flight": in_flight,
        "rss_idle_mb": round(idle / 2**20, 1),
        "rss_open_mb": round(loaded / 2**20, 1),
        "kb_per_stream": round((loaded - idle) / max(1, in_flight) / 1024, 1),
    }


def _upstream_connections(process: psutil.Process) -> int:
    """Established connections the sidecar opened (its listening side excluded)."""
    listening = {c.laddr.port for c in process.net_connections("tcp") if c.status == "LISTEN"}
    return sum(
        1
        for c in process.net_connections("tcp")
        if c.status == "ESTABLISHED" and c.raddr and c.laddr.port not in listening
    )
