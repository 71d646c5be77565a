"""Benchmark: latency the proxy adds, against a direct connection to the same upstream.

The demo upstream (its own process) streams tokens on fixed deadlines, stamping each
event; the load generator (this process, raw sockets) measures TTFT, inter-token gaps and
per-event delivery delay on the client side. Direct and proxied runs are interleaved and
repeated at each concurrency; "added" is the proxied percentile minus the direct one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
from pathlib import Path

from tests.sidecar import demo_upstream, run_sidecar

from bench.loadgen import Sample, percentile, request_bytes, run_load

RESULTS = Path(__file__).parent / "results"
TTFT, ITL, TOKENS = 0.05, 0.01, 20


def merge(samples: list[Sample]) -> Sample:
    out = Sample()
    for s in samples:
        out.ttft += s.ttft
        out.gaps += s.gaps
        out.delays += s.delays
        out.requests += s.requests
        out.errors += s.errors
    return out


def figures(direct: Sample, proxied: Sample) -> dict[str, float | int]:
    ms = 1000.0
    row: dict[str, float | int] = {"requests": proxied.requests, "errors": proxied.errors}
    for name, d, p in (
        ("ttft", direct.ttft, proxied.ttft),
        ("itl", direct.gaps, proxied.gaps),
        ("event_delay", direct.delays, proxied.delays),
    ):
        for q in (0.5, 0.99):
            tag = f"p{int(q * 100)}"
            row[f"{name}_direct_{tag}_ms"] = round(percentile(d, q) * ms, 3)
            row[f"{name}_proxied_{tag}_ms"] = round(percentile(p, q) * ms, 3)
            row[f"added_{name}_{tag}_ms"] = round((percentile(p, q) - percentile(d, q)) * ms, 3)
    return row


async def measure(
    upstream_port: int, proxy_port: int, levels: list[int], rounds: int, budget: int
) -> dict[str, object]:
    request = request_bytes(TTFT, ITL, TOKENS)
    out: dict[str, object] = {}
    duration = TTFT + (TOKENS - 1) * ITL
    for streams in levels:
        per_stream = max(2, budget // streams)
        stagger = duration / streams  # steady arrivals, not one burst per round
        direct, proxied = [], []
        for _ in range(rounds):
            for port, into in ((upstream_port, direct), (proxy_port, proxied)):
                into.append(
                    await run_load("127.0.0.1", port, streams, per_stream, request, stagger)
                )
        out[str(streams)] = figures(merge(direct), merge(proxied))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="1,16,128")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=int, default=16, help="requests per level per round")
    parser.add_argument("--out", type=Path, default=RESULTS / "proxy_latency.json")
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with (
            demo_upstream(work) as upstream,
            run_sidecar(work, "--no-gpu-metrics", upstream=upstream) as sidecar,
        ):
            up_port = int(upstream.rsplit(":", 1)[1])
            px_port = int(sidecar.proxy_url.rsplit(":", 1)[1])
            levels_out = asyncio.run(measure(up_port, px_port, levels, args.rounds, args.budget))
    result = {
        "benchmark": "proxy_added_latency",
        "upstream": {"ttft_s": TTFT, "itl_s": ITL, "tokens": TOKENS},
        "levels": levels_out,
        "machine": {"arch": platform.machine(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
