"""Benchmark: CPU per forwarded event of nginx, the floor and infermeter, to the nanosecond,
and infermeter's split into a cost per request and a cost per event (issue #15).

`bench.run`'s latency section reads CPU in /proc's 10 ms ticks over a few thousand events,
and each path runs 3 times: its CPU figure moves by 10-15 % between runs. Here every path
runs many short rounds in turn (the order rotating), each round reading each process
tree's own CPU clock (`bench.tree.process_cpu`), and the medians and quartiles are
reported. Then, for infermeter and the floor, requests of 2 and of 40 tokens on the same
connections give CPU = per_request + tokens x per_event (two points, a straight line).

    python -m bench.cpu_split [--streams 16] [--rounds 12] [--paths nginx,floor,infermeter]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import nginx
from bench.floor import floor_proxy
from bench.tree import tree_cpu
from harness import sidecar as launcher
from harness.loadgen import request_bytes, run_load

TTFT, ITL, TOKENS = 0.05, 0.02, 20
Paths = dict[str, tuple[int, int]]  # name -> (port, PID of the process tree counted)


async def per_event(
    paths: Paths, streams: int, rounds: int, per_stream: int, ttft: float = TTFT, itl: float = ITL
) -> dict[str, dict[str, float]]:
    """Each path `rounds` times (the order rotating): medians and quartiles of CPU µs per
    forwarded event, and each path's ratio to nginx's median when nginx ran."""
    request = request_bytes(ttft, itl, TOKENS)
    stagger = (ttft + TOKENS * itl) / streams
    spent: dict[str, list[float]] = {name: [] for name in paths}
    for port, _ in paths.values():  # warm up: first connections and requests
        await run_load("127.0.0.1", port, 4, 2, request, 0.01)
    names = list(paths)
    for k in range(rounds):
        for name in names[k % len(names) :] + names[: k % len(names)]:
            port, pid = paths[name]
            before = tree_cpu(pid)
            sample = await run_load("127.0.0.1", port, streams, per_stream, request, stagger)
            spent[name].append((tree_cpu(pid) - before) / max(len(sample.delays), 1) * 1e6)
    out: dict[str, dict[str, float]] = {}
    for name, values in spent.items():
        ordered = sorted(values)
        out[name] = {
            "us_per_event": round(statistics.median(ordered), 1),
            "q1": round(ordered[len(ordered) // 4], 1),
            "q3": round(ordered[-1 - len(ordered) // 4], 1),
        }
    if "nginx" in out:
        for row in out.values():
            row["vs_nginx"] = round(row["us_per_event"] / out["nginx"]["us_per_event"], 2)
    return out


async def split(
    port: int, pid: int, streams: int, requests: int, ttft: float = TTFT, itl: float = ITL
) -> dict[str, float]:
    """CPU µs per request and per event, from runs of 2-token and 40-token requests."""
    cost = {}
    for tokens, per_stream in ((2, requests), (40, max(1, requests // 10))):
        request = request_bytes(ttft, itl, tokens)
        before = tree_cpu(pid)
        await run_load(
            "127.0.0.1", port, streams, per_stream, request, (ttft + tokens * itl) / streams
        )
        cost[tokens] = (tree_cpu(pid) - before) / (streams * per_stream) * 1e6
    event = (cost[40] - cost[2]) / 38
    return {"us_per_request": round(cost[2] - 2 * event, 1), "us_per_event": round(event, 1)}


@contextmanager
def start_paths(work: Path, upstream: str, wanted: list[str]) -> Iterator[Paths]:
    """The `wanted` proxies in front of `upstream` (nginx only when it is installed)."""
    with ExitStack() as stack:
        paths: Paths = {}
        for name in wanted:
            if name == "nginx":
                if not nginx.available():
                    continue
                url, pid = stack.enter_context(nginx.nginx_proxy(upstream))
                paths[name] = (int(url.rsplit(":", 1)[1]), pid)
            elif name == "floor":
                paths[name] = stack.enter_context(floor_proxy(upstream))
            else:
                car = stack.enter_context(
                    launcher.run_sidecar(work, "--no-gpu-metrics", upstream=upstream)
                )
                paths[name] = (int(car.proxy_url.rsplit(":", 1)[1]), car.proc.pid)
        yield paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-stream", type=int, default=2, help="requests per stream a round")
    parser.add_argument(
        "--split-requests", type=int, default=100, help="2-token requests per stream"
    )
    parser.add_argument("--paths", default="nginx,floor,infermeter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(launcher.demo_upstream(work))
        paths = stack.enter_context(start_paths(work, upstream, args.paths.split(",")))
        result: dict[str, object] = {
            "streams": args.streams,
            "rounds": args.rounds,
            "per_event": asyncio.run(per_event(paths, args.streams, args.rounds, args.per_stream)),
            "split": {
                name: asyncio.run(split(*paths[name], args.streams, args.split_requests))
                for name in paths
                if name != "nginx"
            },
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
