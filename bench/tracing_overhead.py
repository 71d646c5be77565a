"""Benchmark: what tracing costs per request, sampled at 100% vs off.

The same load (16 concurrent streams against the demo upstream) runs through a sidecar
with tracing off, then through one exporting every span over OTLP/HTTP to a local
receiver. Reported: the sidecar's CPU seconds per request (psutil) and the TTFT the client
saw, for each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import psutil

from harness.loadgen import percentile, request_bytes, run_load
from harness.otlp_receiver import otlp_receiver
from harness.sidecar import demo_upstream, run_sidecar

RESULTS = Path(__file__).parent / "results"


def measure(
    work: Path, upstream: str, extra: tuple[str, ...], env: dict[str, str], requests: int
) -> dict[str, float]:
    with run_sidecar(work, "--no-gpu-metrics", *extra, upstream=upstream, env=env) as sidecar:
        port = int(sidecar.proxy_url.rsplit(":", 1)[1])
        proc = psutil.Process(sidecar.proc.pid)
        request = request_bytes(0.02, 0.005, 16)
        asyncio.run(run_load("127.0.0.1", port, 16, 2, request, 0.005))  # warm-up
        before = sum(proc.cpu_times()[:2])
        sample = asyncio.run(run_load("127.0.0.1", port, 16, requests // 16, request, 0.005))
        cpu = sum(proc.cpu_times()[:2]) - before
    return {
        "requests": sample.requests,
        "cpu_ms_per_request": round(cpu / sample.requests * 1000, 3),
        "ttft_p50_ms": round(percentile(sample.ttft, 0.5) * 1000, 3),
        "ttft_p99_ms": round(percentile(sample.ttft, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=960)
    parser.add_argument("--out", type=Path, default=RESULTS / "tracing_overhead.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, otlp_receiver() as receiver:
        work = Path(tmp)
        with demo_upstream(work) as upstream:
            off = measure(work, upstream, (), {}, args.requests)
            on = measure(work, upstream, ("--otlp-endpoint", receiver.url), {}, args.requests)
        spans = len(receiver.spans())
    result = {
        "benchmark": "tracing_overhead",
        "off": off,
        "on_sampled_100pct": on,
        "spans_received": spans,
        "added_cpu_ms_per_request": round(on["cpu_ms_per_request"] - off["cpu_ms_per_request"], 3),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
