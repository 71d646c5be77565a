"""Benchmark: latency and CPU the proxy adds, against a direct connection and nginx.

The demo upstream (its own process) streams tokens on fixed deadlines, stamping each
event; the load generator (this process, raw sockets) measures TTFT, inter-token gaps and
per-event delivery delay on the client side. At each concurrency the paths run
interleaved and repeated: direct, through nginx (one worker, proxy_buffering off) and
through infermeter. "Added" is a path's percentile minus the direct one; CPU per million
forwarded events is the proxy process's CPU time over the token events it forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench import nginx
from bench.floor import floor_proxy
from bench.tree import tree_cpu
from harness.loadgen import Sample, percentile, request_bytes, run_load
from harness.sidecar import demo_upstream, run_sidecar

RESULTS = Path(__file__).parent / "results"
# 20 ms per token (50 tokens/s, a typical decode rate): 512 streams are then 25,600 events/s,
# already more than the Python upstream and load generator sharing two cores can keep on time.
TTFT, ITL, TOKENS = 0.05, 0.02, 20


def merge(samples: list[Sample]) -> Sample:
    out = Sample()
    for s in samples:
        out.ttft += s.ttft
        out.gaps += s.gaps
        out.delays += s.delays
        out.requests += s.requests
        out.errors += s.errors
    return out


def absolute(sample: Sample) -> dict[str, float | int]:
    """A path's own percentiles; for direct they show when the upstream or client lagged."""
    row: dict[str, float | int] = {"requests": sample.requests, "errors": sample.errors}
    for name, values in (
        ("ttft", sample.ttft),
        ("itl", sample.gaps),
        ("event_delay", sample.delays),
    ):
        for q in (0.5, 0.99):
            row[f"{name}_p{int(q * 100)}_ms"] = round(percentile(values, q) * 1000, 3)
    return row


def figures(direct: Sample, path: Sample, cpu_seconds: float | None) -> dict[str, float | int]:
    row = absolute(path)
    for name, d, p in (
        ("ttft", direct.ttft, path.ttft),
        ("itl", direct.gaps, path.gaps),
        ("event_delay", direct.delays, path.delays),
    ):
        for q in (0.5, 0.99):
            added = percentile(p, q) - percentile(d, q)
            row[f"added_{name}_p{int(q * 100)}_ms"] = round(added * 1000, 3)
    if cpu_seconds is not None and path.delays:
        row["cpu_s_per_million_events"] = round(cpu_seconds / len(path.delays) * 1e6, 1)
    return row


def cpu(pid: int | None) -> float:
    """The proxy's CPU seconds: the sidecar's supervisor and workers, nginx's worker."""
    return 0.0 if pid is None else tree_cpu(pid)


async def measure(
    paths: dict[str, tuple[int, int | None]],
    levels: list[int],
    rounds: int,
    budget: int,
    itl: float = ITL,
    upstream_pid: int | None = None,
) -> dict[str, object]:
    """Each level: every path in turn, `rounds` times, `budget` requests per path and round
    (at least 2 per stream). With `upstream_pid`, the upstream's CPU share is recorded too:
    near 1.0 it, not the proxy, sets the pace."""
    request = request_bytes(TTFT, itl, TOKENS)
    duration = TTFT + (TOKENS - 1) * itl
    out: dict[str, object] = {}
    for streams in levels:
        per_stream = max(2, budget // streams)
        stagger = duration / streams  # steady arrivals, not one burst per round
        samples: dict[str, list[Sample]] = {name: [] for name in paths}
        cpu_used = dict.fromkeys(paths, 0.0)
        client_cpu = dict.fromkeys(paths, 0.0)
        upstream_cpu = dict.fromkeys(paths, 0.0)
        wall = dict.fromkeys(paths, 0.0)
        for _ in range(rounds):
            for name, (port, pid) in paths.items():
                before, own, started = cpu(pid), time.process_time(), time.perf_counter()
                upstream_before = cpu(upstream_pid)
                samples[name].append(
                    await run_load("127.0.0.1", port, streams, per_stream, request, stagger)
                )
                cpu_used[name] += cpu(pid) - before
                client_cpu[name] += time.process_time() - own
                upstream_cpu[name] += cpu(upstream_pid) - upstream_before
                wall[name] += time.perf_counter() - started
        direct = merge(samples["direct"])
        level: dict[str, dict[str, float | int]] = {}
        for name, (_, pid) in paths.items():
            if name != "direct":
                level[name] = figures(direct, merge(samples[name]), cpu_used[name] if pid else None)
            else:
                level[name] = absolute(direct)
            level[name]["offered_events_per_s"] = round(streams / itl)
            # the load generator's own CPU share: near 1.0, the client is the bottleneck
            level[name]["client_cpu_share"] = round(client_cpu[name] / max(wall[name], 1e-9), 2)
            if upstream_pid is not None:
                share = upstream_cpu[name] / max(wall[name], 1e-9)
                level[name]["upstream_cpu_share"] = round(share, 2)
        out[str(streams)] = level
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", default="1,16,128,512")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=16, help="requests per level per round")
    parser.add_argument("--out", type=Path, default=RESULTS / "proxy_latency.json")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench.floor, a minimal Python proxy measuring nothing (the yardstick)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(demo_upstream(work))
        sidecar = stack.enter_context(run_sidecar(work, "--no-gpu-metrics", upstream=upstream))
        paths: dict[str, tuple[int, int | None]] = {
            "direct": (int(upstream.rsplit(":", 1)[1]), None),
        }
        if nginx.available():
            url, worker = stack.enter_context(nginx.nginx_proxy(upstream))
            paths["nginx"] = (int(url.rsplit(":", 1)[1]), worker)
        if args.floor:
            paths["python_floor"] = stack.enter_context(floor_proxy(upstream))
        paths["infermeter"] = (int(sidecar.proxy_url.rsplit(":", 1)[1]), sidecar.proc.pid)
        results = asyncio.run(measure(paths, levels, args.rounds, args.budget))
    result = {
        "benchmark": "proxy_added_latency",
        "upstream": {"ttft_s": TTFT, "itl_s": ITL, "tokens": TOKENS},
        "levels": results,
        "machine": {
            "arch": platform.machine(),
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
