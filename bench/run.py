"""`make bench`: every figure of the performance issue in one run, into bench/results/.

One process drives the load (raw sockets, client-side timing); the demo upstream, nginx and
the sidecar are their own processes. Sections, each in `bench.json` under its name:

- latency: added TTFT / ITL / per-event delay vs direct at fixed concurrency (1, 16, 128,
  512 streams), paths interleaved and repeated; proxy CPU per million events; the load
  generator's own CPU share (near 1.0 means the client, not the proxy, was the limit).
- sustained: for each proxy, the most streams (20 ms per event) it carries with added
  per-event p99 under 5 ms.
- open_loop: Poisson arrivals at fixed rates, TTFT counted from the scheduled arrival.
- memory: sidecar RSS idle and with 1,000 streams open.
- accuracy: |sidecar TTFT - client TTFT| per request, matched by trace id.
- scrape: /metrics with 8 GPUs (no models, the exporter alone), then with 8 GPUs and 64
  models: render time, and per-event delay and loop lag of live streams during scrapes.

`--smoke` runs every section tiny (seconds), for `make test`.
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
from typing import Any

import psutil
from tests.otlp_receiver import otlp_receiver
from tests.sidecar import demo_upstream, run_sidecar

from bench import accuracy, memory, nginx, plot, scrape, scrape_load
from bench.loadgen import Sample, percentile, request_bytes, run_load, run_open_loop
from bench.proxy_latency import ITL, TOKENS, TTFT, measure

RESULTS = Path(__file__).parent / "results"
EVENT_TARGET_MS = 5.0

FULL: dict[str, Any] = {
    "levels": [1, 16, 128, 512],
    "rounds": 3,
    "budget": 32,
    "sustained": [16, 32, 64, 128, 256, 400, 512],
    "rates": [20, 100],
    "open_seconds": 8.0,
    "open_streams": 1000,
    "accuracy_requests": 200,
    "scrapes": 200,
    "load_scrapes": 5,
    "models": 64,
    "gpus": 8,
    "per_stream": 10,
}
SMOKE: dict[str, Any] = {
    "levels": [1, 4],
    "rounds": 1,
    "budget": 4,
    "sustained": [4, 8],
    "rates": [10],
    "open_seconds": 1.0,
    "open_streams": 20,
    "accuracy_requests": 10,
    "scrapes": 5,
    "load_scrapes": 1,
    "models": 4,
    "gpus": 1,
    "per_stream": 2,
}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def sustained(
    paths: dict[str, tuple[int, int | None]], levels: list[int], tries: int = 2
) -> dict[str, Any]:
    """Step up the streams (20 ms per event) until added per-event p99 passes the target.

    At each step the direct path and the proxy run `tries` times, interleaved, and their
    samples are pooled, so one noisy run on a shared machine does not decide a step.
    """
    request = request_bytes(TTFT, 0.02, 25)
    out: dict[str, Any] = {}
    direct_port = paths["direct"][0]
    for name, (port, _) in paths.items():
        if name == "direct":
            continue
        steps = []
        best = 0
        for streams in levels:
            stagger = 0.55 / streams
            direct, path = Sample(), Sample()
            for _ in range(tries):
                for target, into in ((direct_port, direct), (port, path)):
                    got = await run_load("127.0.0.1", target, streams, 2, request, stagger)
                    into.delays += got.delays
                    into.errors += got.errors
            added = percentile(path.delays, 0.99) - percentile(direct.delays, 0.99)
            ok = path.errors == 0 and added * 1000 < EVENT_TARGET_MS
            steps.append({"streams": streams, "added_event_p99_ms": _ms(added), "ok": ok})
            if not ok:
                break
            best = streams
        out[name] = {"max_streams": best, "steps": steps}
    return out


async def open_loop(
    paths: dict[str, tuple[int, int | None]], rates: list[float], seconds: float
) -> dict[str, Any]:
    request = request_bytes(TTFT, ITL, TOKENS)
    out: dict[str, Any] = {}
    for rate in rates:
        samples: dict[str, Sample] = {}
        for name, (port, _) in paths.items():
            samples[name] = await run_open_loop("127.0.0.1", port, rate, seconds, request)
        direct = samples["direct"]
        level: dict[str, Any] = {}
        for name, sample in samples.items():
            row: dict[str, Any] = {"requests": sample.requests, "errors": sample.errors}
            for q in (0.5, 0.99):
                tag = f"p{int(q * 100)}"
                row[f"ttft_{tag}_ms"] = _ms(percentile(sample.ttft, q))
                row[f"event_delay_{tag}_ms"] = _ms(percentile(sample.delays, q))
                if name != "direct":
                    row[f"added_ttft_{tag}_ms"] = _ms(
                        percentile(sample.ttft, q) - percentile(direct.ttft, q)
                    )
            level[name] = row
        out[str(rate)] = level
    return out


def accuracy_section(work: Path, upstream: str, requests: int) -> dict[str, Any]:
    with (
        otlp_receiver() as receiver,
        run_sidecar(
            work, "--no-gpu-metrics", "--otlp-endpoint", receiver.url, upstream=upstream
        ) as sidecar,
    ):
        port = int(str(sidecar.proxy_url).rsplit(":", 1)[1])
        client = asyncio.run(accuracy.client_ttfts(port, requests, 0.02, 1))
        spans = accuracy.sidecar_ttfts(receiver, len(client))
    return {"requests": requests, "streams": 1, **accuracy.compare(client, spans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="every section, tiny")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    size = SMOKE if args.smoke else FULL
    started = time.monotonic()
    result: dict[str, Any] = {
        "benchmark": "infermeter",
        "smoke": args.smoke,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "arch": platform.machine(),
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
        },
        "upstream": {"ttft_s": TTFT, "itl_s": ITL, "tokens": TOKENS},
    }
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        work = Path(tmp)
        upstream = stack.enter_context(demo_upstream(work))
        sidecar = stack.enter_context(run_sidecar(work, "--no-gpu-metrics", upstream=upstream))
        direct_port = int(upstream.rsplit(":", 1)[1])
        paths: dict[str, tuple[int, int | None]] = {"direct": (direct_port, None)}
        if nginx.available():
            url, worker = stack.enter_context(nginx.nginx_proxy(upstream))
            paths["nginx"] = (int(url.rsplit(":", 1)[1]), worker)
        paths["infermeter"] = (int(str(sidecar.proxy_url).rsplit(":", 1)[1]), sidecar.proc.pid)
        result["paths"] = list(paths)
        result["latency"] = asyncio.run(
            measure(paths, size["levels"], size["rounds"], size["budget"])
        )
        result["sustained"] = asyncio.run(sustained(paths, size["sustained"]))
        result["open_loop"] = asyncio.run(open_loop(paths, size["rates"], size["open_seconds"]))
        result["memory"] = asyncio.run(
            memory.rss_with_open_streams(
                paths["infermeter"][0], sidecar.proc.pid, size["open_streams"], hold=5.0
            )
        )
        result["accuracy"] = accuracy_section(work, upstream, size["accuracy_requests"])
    result["scrape"] = {
        "exporter_only": scrape.run(size["scrapes"], 8),
        "with_models": scrape_load.run(
            size["models"], size["gpus"], size["load_scrapes"], 1.0, size["per_stream"]
        ),
    }
    result["duration_s"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    plot.latency_vs_concurrency(result, args.out / "latency_vs_concurrency.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
