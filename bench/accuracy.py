"""How exactly the sidecar measures TTFT: its own figure against the client's, per request.

Each request carries a W3C traceparent with a trace id chosen here; the sidecar (tracing
on, every request sampled) exports a span with `gen_ai.response.time_to_first_chunk` under
that trace id to a local OTLP receiver. The client's TTFT for the same request is measured
with the same raw-socket client as the latency benchmark, so the two are matched exactly,
not by order or by averages.
"""

from __future__ import annotations

import asyncio
import secrets
import time

from harness.loadgen import Sample, one_stream, percentile, request_bytes
from harness.otlp_receiver import Receiver, attributes


async def client_ttfts(
    port: int, requests: int, ttft: float, streams: int, warm_up: int = 10
) -> dict[str, float]:
    """TTFT as the client saw it, by trace id; the first `warm_up` requests are not kept."""
    out: dict[str, float] = {}
    ids = [secrets.token_hex(16) for _ in range(requests + warm_up)]
    skip = set(ids[:warm_up])
    queue: asyncio.Queue[str] = asyncio.Queue()
    for trace_id in ids:
        queue.put_nowait(trace_id)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while not queue.empty():
            trace_id = queue.get_nowait()
            head = request_bytes(ttft, 0.005, 4).replace(
                b"\r\n\r\n", f"\r\ntraceparent: 00-{trace_id}-{'1' * 16}-01\r\n\r\n".encode(), 1
            )
            sample = Sample()
            await one_stream(reader, writer, head, sample)
            if sample.ttft and trace_id not in skip:
                out[trace_id] = sample.ttft[0]
        writer.close()

    await asyncio.gather(*(worker() for _ in range(streams)))
    return out


def sidecar_ttfts(receiver: Receiver, wanted: set[str], timeout: float = 15.0) -> dict[str, float]:
    """The sidecar's TTFT by trace id, once every wanted trace has been exported (or the
    timeout passed: the missing ones then show as `matched` < requests)."""
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while time.monotonic() < deadline:
        found = {}
        for span in receiver.spans():
            ttft = attributes(span).get("gen_ai.response.time_to_first_chunk")
            if ttft is not None:
                found[span.trace_id.hex()] = float(ttft)
        if wanted <= found.keys():
            break
        time.sleep(0.1)
    return found


def compare(client: dict[str, float], sidecar: dict[str, float]) -> dict[str, float | int]:
    """|sidecar - client| per request; positive bias: the client waited longer."""
    diffs = [client[t] - sidecar[t] for t in client if t in sidecar]
    errors = [abs(d) for d in diffs]
    ms = 1000.0
    return {
        "matched": len(diffs),
        "abs_error_p50_ms": round(percentile(errors, 0.5) * ms, 3),
        "abs_error_p99_ms": round(percentile(errors, 0.99) * ms, 3),
        "bias_p50_ms": round(percentile(diffs, 0.5) * ms, 3),
    }
