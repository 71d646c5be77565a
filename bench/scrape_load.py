"""/metrics with 8 GPUs and 64 models: render time, and what a scrape does to live streams.

The sidecar runs on the fake NVML (8 H100 profiles) in front of the demo upstream; 64
distinct models are sent through it first, so every per-model histogram exists. Then:
render time for both formats Prometheus may ask for; and 16 streams measured twice, quiet
and while a separate scraper process fetches /metrics (OpenMetrics, gzip, as Prometheus
does) every `every` seconds: client-side per-event delay, and the sidecar's own event-loop
lag histogram over each phase.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.fake_nvml import profiles
from tests.fake_nvml.build import build
from tests.sidecar import Sidecar, demo_upstream, run_sidecar

from bench.loadgen import percentile, run_load

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SCRAPER = """
import http.client, sys, time
port, every, accept = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
while True:
    t = time.perf_counter()
    c.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
    c.getresponse().read()
    print(time.perf_counter() - t, flush=True)
    time.sleep(every)
"""


def model_request(model: str, ttft: float, itl: float, tokens: int) -> bytes:
    body = json.dumps(
        {"model": model, "stream": True, "max_tokens": tokens, "messages": [{"role": "user"}]}
    ).encode()
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"x-demo-ttft: {ttft}\r\nx-demo-itl: {itl}\r\nx-demo-stamp: 1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def lag_buckets(sidecar: Sidecar) -> dict[float, float]:
    text = sidecar.metrics("infermeter_event_loop_lag_seconds_bucket")
    pattern = r'infermeter_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)'
    return {float(m[1]): float(m[2]) for m in re.finditer(pattern, text)}


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Share of loop-lag probes (one per 100 ms) within 1 ms, and the p99 bucket bound."""
    total = after[float("inf")] - before[float("inf")]
    if total <= 0:
        return {"probes": 0}
    within = {le: (after[le] - before[le]) / total for le in sorted(after)}
    p99 = next(le for le, share in within.items() if share >= 0.99)
    return {
        "probes": total,
        "share_within_1ms": round(within[0.001], 3),
        "p99_le_ms": p99 * 1000 if p99 != float("inf") else -1,
    }


def render_times(port: int, accept: str, scrapes: int) -> dict[str, float]:
    import http.client

    client = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times: list[float] = []
    size = 0
    for _ in range(scrapes):
        started = time.perf_counter()
        client.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
        size = len(client.getresponse().read())
        times.append(time.perf_counter() - started)
    client.close()
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "bytes_gzip": size,
    }


def run(models: int, gpus: int, scrapes: int, every: float, per_stream: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lib = build(work)
        state = work / "nvml.json"
        profiles.write(state, profiles.state([profiles.gpu(i) for i in range(gpus)]))
        with (
            demo_upstream(work) as upstream,
            run_sidecar(work, lib_dir=lib.parent, nvml_state=state, upstream=upstream) as sc,
        ):
            sc.wait_metric("infermeter_gpu_up", 1.0, gpu=str(gpus - 1))
            port = int(str(sc.proxy_url).rsplit(":", 1)[1])

            async def warm() -> None:
                await asyncio.gather(
                    *(
                        run_load("127.0.0.1", port, 1, 1, model_request(f"m{i:02d}", 0, 0, 3))
                        for i in range(models)
                    )
                )

            asyncio.run(warm())
            samples = sum(
                1 for line in sc.metrics().splitlines() if line and not line.startswith("#")
            )
            render = {
                "text": render_times(sc.port, "text/plain", scrapes),
                "openmetrics": render_times(sc.port, OPENMETRICS, scrapes),
            }
            phases: dict[str, object] = {}
            stream_request = model_request("m00", 0.02, 0.01, 20)
            for phase in ("quiet", "scraping"):
                scraper = None
                if phase == "scraping":
                    scraper = subprocess.Popen(
                        [sys.executable, "-c", SCRAPER, str(sc.port), str(every), OPENMETRICS],
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                before = lag_buckets(sc)
                sample = asyncio.run(
                    run_load("127.0.0.1", port, 16, per_stream, stream_request, 0.01)
                )
                after = lag_buckets(sc)
                scraped = 0
                if scraper is not None:
                    scraper.terminate()
                    out, _ = scraper.communicate()
                    scraped = len(out.split())
                phases[phase] = {
                    "events": len(sample.delays),
                    "event_delay_p50_ms": round(percentile(sample.delays, 0.5) * 1000, 3),
                    "event_delay_p99_ms": round(percentile(sample.delays, 0.99) * 1000, 3),
                    "event_delay_max_ms": round(max(sample.delays) * 1000, 3),
                    "scrapes": scraped,
                    "loop_lag": lag_summary(before, after),
                }
    return {
        "gpus": gpus,
        "models": models,
        "samples": samples,
        "render": render,
        "streams_during_scrapes": phases,
        "scrape_every_s": every,
    }
