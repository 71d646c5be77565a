"""Benchmark: two checkouts' proxy workers side by side, for a before/after of the hot path.

On a shared machine two runs of `bench.proxy_latency` made minutes apart differ by 10-15 %:
more than most changes to the hot path. Here both sidecars run at once, behind one demo
upstream, and the same load goes to each in turn, round after round; each round reads the
worker process's own user and system CPU (`/proc`, not the supervisor's) per forwarded
event, and the added TTFT p50 against the upstream directly in the same round.
Usage: `python -m bench.worker_ab --streams 16 --rounds 6 before=/tmp/before after=.`; each
checkout needs its own virtualenv in `.venv` (`infermeter` installed from that checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import psutil

from bench.tree import process_cpu
from harness import sidecar as launcher
from harness.loadgen import request_bytes, run_load

TTFT, ITL = 0.05, 0.02


def _worker_cpu(supervisor: int) -> tuple[float, float, float]:
    """User and system seconds (/proc's ticks), and the total from the process's CPU clock
    (nanoseconds: the figure to compare, see `bench.tree.process_cpu`)."""
    worker = psutil.Process(supervisor).children()[0]
    times = worker.cpu_times()
    return times.user, times.system, process_cpu(worker.pid) or 0.0


async def _measure(
    ports: dict[str, tuple[int, int]], upstream: int, streams: int, rounds: int, tokens: int
) -> None:
    request = request_bytes(TTFT, ITL, tokens)
    per_stream = 10
    stagger = (TTFT + tokens * ITL) / streams
    cpu: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ports}
    ttft: dict[str, list[float]] = {name: [] for name in [*ports, "direct"]}
    for port, _ in ports.values():  # warm up: connections, first requests
        await run_load("127.0.0.1", port, 4, 2, request, 0.01)
    for _ in range(rounds):
        for name, (port, pid) in ports.items():
            before = _worker_cpu(pid)
            sample = await run_load("127.0.0.1", port, streams, per_stream, request, stagger)
            after = _worker_cpu(pid)
            events = len(sample.delays)
            user, system, clock = (
                1e6 * (b - a) / events for a, b in zip(before, after, strict=True)
            )
            cpu[name].append((user, system, clock))
            ttft[name] += sample.ttft
        direct = await run_load("127.0.0.1", upstream, streams, per_stream, request, stagger)
        ttft["direct"] += direct.ttft
    base = statistics.median(ttft["direct"])
    for name, figures in cpu.items():
        user = statistics.median(f[0] for f in figures)
        system = statistics.median(f[1] for f in figures)
        total = sorted(f[2] for f in figures)
        q1, q3 = total[len(total) // 4], total[-1 - len(total) // 4]
        added = (statistics.median(ttft[name]) - base) * 1000
        print(
            f"{name:>10} {streams:4d} streams: worker user {user:6.1f} + sys {system:5.1f} "
            f"us/event, on-CPU {statistics.median(total):6.1f} (quartiles {q1:.1f}-{q3:.1f}; "
            f"medians of {rounds} rounds), "
            f"added TTFT p50 {added:.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("checkouts", nargs="+", help="NAME=PATH, PATH holding .venv/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(launcher.demo_upstream(work))
        ports: dict[str, tuple[int, int]] = {}
        for item in args.checkouts:
            name, path = item.split("=", 1)
            launcher.INFERMETER = str(Path(path).resolve() / ".venv" / "bin" / "infermeter")
            car = stack.enter_context(
                launcher.run_sidecar(work, "--no-gpu-metrics", upstream=upstream)
            )
            ports[name] = (int(car.proxy_url.rsplit(":", 1)[1]), car.proc.pid)
        asyncio.run(
            _measure(ports, int(upstream.rsplit(":", 1)[1]), args.streams, args.rounds, args.tokens)
        )


if __name__ == "__main__":
    main()
