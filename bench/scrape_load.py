"""/metrics with 8 GPUs and 64 models: render time, and what a scrape does to live streams.

The sidecar runs on the fake NVML (8 H100 profiles) in front of the demo upstream; 64
distinct models are sent through it first, so every per-model histogram exists. Then:
render time for both formats Prometheus may ask for; and 16 streams measured twice, quiet
and while a separate scraper process fetches /metrics (OpenMetrics, gzip, as Prometheus
does) every `every` seconds (0: back to back, so every loop-lag probe falls during a
scrape): client-side per-event delay, and the sidecar's own event-loop lag histogram
(`infermeter_event_loop_lag_seconds`, one probe per 100 ms) read before and after each
phase, its p99 estimated from the bucket deltas.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from harness.fake_nvml import profiles
from harness.fake_nvml.build import build
from harness.loadgen import percentile, run_load
from harness.sidecar import Sidecar, demo_upstream, run_sidecar, wait_for

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
SCRAPER = """
import http.client, sys, time
port, every, accept = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
while True:
    t = time.perf_counter()
    c.request("GET", "/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"})
    c.getresponse().read()
    print(f"{time.perf_counter() - t:.6f}", flush=True)
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


def buckets(sidecar: Sidecar, name: str, **labels: str) -> dict[float, float]:
    """A histogram's cumulative buckets, summed over its series that carry `labels` (the
    workers' loop-lag series; one model's ITL series)."""
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(sidecar.metrics(name + "_bucket")):
        for sample in family.samples:
            if sample.name != name + "_bucket":
                continue
            if any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            le = float(sample.labels["le"])
            out[le] = out.get(le, 0.0) + sample.value
    return out


def lag_buckets(sidecar: Sidecar) -> dict[float, float]:
    return buckets(sidecar, "infermeter_event_loop_lag_seconds")


def itl_moved(
    before: dict[float, float], after: dict[float, float], bound: float
) -> dict[str, float]:
    """Share of the sidecar's ITL observations of the phase above `bound` (the true gap plus
    10 ms): what a stall of the sidecar writes into the histogram the alerts read."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return {"observations": 0}
    within = after.get(bound, 0.0) - before.get(bound, 0.0)
    return {
        "observations": total,
        "bound_ms": round(bound * 1000, 3),
        "share_above": round((total - within) / total, 5),
    }


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """The loop-lag probes (one per 100 ms) taken between two readings of the histogram.

    p99 as Prometheus's histogram_quantile would estimate it from the bucket deltas (linear
    within the bucket), and the upper bound of the bucket it falls in; -1: above every bound.
    """
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if total <= 0:
        return {"probes": 0}
    before = {le: before.get(le, 0.0) for le in after}  # none handed over yet: zeros
    bounds = sorted(after)
    rank = 0.99 * total
    lower, below, p99, p99_le = 0.0, 0.0, -1.0, -1.0
    for le in bounds:
        count = after[le] - before[le]
        if count >= rank:
            if le == float("inf"):
                p99 = p99_le = lower  # histogram_quantile's answer: the highest finite bound
            else:
                p99 = lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
                p99_le = le
            break
        lower, below = le, count
    max_le = next(
        (le for le in reversed(bounds) if after[le] - before[le] < total), 0.0
    )  # the last bound some probe exceeded
    return {
        "probes": total,
        "share_within_1ms": round((after[0.001] - before[0.001]) / total, 3),
        "p99_ms": round(p99 * 1000, 3),
        "p99_le_ms": round(p99_le * 1000, 3),
        "max_above_ms": round(max_le * 1000, 3),
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


def run(
    models: int,
    gpus: int,
    scrapes: int,
    every: float,
    seconds: float,
    streams: int = 16,
    lib: Path | None = None,
    workers: int = 1,
) -> dict[str, object]:
    """Render times, then `streams` live streams for `seconds` quiet and `seconds` while
    another process scrapes every `every` s (0: back to back, a burst)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lib = lib or build(work)
        state = work / "nvml.json"
        profiles.write(state, profiles.state([profiles.gpu(i) for i in range(gpus)]))
        with (
            demo_upstream(work) as upstream,
            run_sidecar(
                work,
                "--workers",
                str(workers),
                lib_dir=lib.parent,
                nvml_state=state,
                upstream=upstream,
            ) as sc,  # fmt: skip
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

            def handed_over() -> str | None:  # the workers hand over every 0.25 s
                text = sc.metrics()
                return text if len(set(re.findall(r'model="(m\d+)"', text))) >= models else None

            text = wait_for(handed_over, what="every model's series")
            samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
            seen = len(set(re.findall(r'model="(m\d+)"', text)))
            render = {
                "text": render_times(sc.port, "text/plain", scrapes),
                "openmetrics": render_times(sc.port, OPENMETRICS, scrapes),
            }
            phases = {
                phase: live_streams(
                    sc, port, streams, seconds, every if phase == "scraping" else None
                )
                for phase in ("quiet", "scraping")
            }
    return {
        "gpus": gpus,
        "models": models,
        "models_seen": seen,
        "samples": samples,
        "render": render,
        "streams": streams,
        "streams_during_scrapes": phases,
        "scrape_every_s": every,
        "workers": workers,
    }


def live_streams(
    sc: Sidecar, port: int, streams: int, seconds: float, every: float | None
) -> dict[str, object]:
    """Per-event delay of live streams and the loop-lag histogram's delta over the phase;
    with `every`, a scraper process runs from its first finished scrape to the end."""
    ttft, itl, tokens = 0.02, 0.01, 20
    request = model_request("m00", ttft, itl, tokens)
    duration = ttft + tokens * itl
    per_stream = max(1, math.ceil(seconds / duration))
    scraper = None
    with tempfile.TemporaryFile("w+") as log:
        if every is not None:
            # a file, not a pipe: back-to-back scrapes of a small exposition would fill a pipe
            scraper = subprocess.Popen(
                [sys.executable, "-c", SCRAPER, str(sc.port), str(every), OPENMETRICS],
                stdout=log,
            )
            deadline = time.monotonic() + 60
            while os.fstat(log.fileno()).st_size == 0:  # the phase starts at the first scrape
                if scraper.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the scraper process never finished a scrape")
                time.sleep(0.01)
        itl_name = "infermeter_inter_token_latency_seconds"
        before, itl_before = lag_buckets(sc), buckets(sc, itl_name, model="m00")
        sample = asyncio.run(
            run_load("127.0.0.1", port, streams, per_stream, request, duration / streams)
        )
        time.sleep(0.6)  # the workers hand over every 0.25 s
        after, itl_after = lag_buckets(sc), buckets(sc, itl_name, model="m00")
        scrape_ms: list[float] = []
        if scraper is not None:
            scraper.terminate()
            scraper.wait()
            log.seek(0)
            text = log.read()
            complete = text[: text.rfind("\n") + 1]  # a last line cut by SIGTERM is dropped
            scrape_ms = [float(line) * 1000 for line in complete.split()]
    row: dict[str, object] = {
        "events": len(sample.delays),
        "errors": sample.errors,
        "event_delay_p50_ms": round(percentile(sample.delays, 0.5) * 1000, 3),
        "event_delay_p99_ms": round(percentile(sample.delays, 0.99) * 1000, 3),
        "event_delay_max_ms": round(max(sample.delays, default=float("nan")) * 1000, 3),
        "scrapes": len(scrape_ms),
        "loop_lag": lag_summary(before, after),
        "sidecar_itl": itl_moved(itl_before, itl_after, itl + 0.01),
    }
    if scrape_ms:
        row["scrape_ms_median"] = round(statistics.median(scrape_ms), 1)
    return row
