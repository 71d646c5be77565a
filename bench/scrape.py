"""Benchmark: how long one /metrics scrape takes with 8 GPUs (issue target: median < 10 ms).

Runs the real sidecar on the fake NVML (8 H100 profiles, polled every second), scrapes it
over loopback with a keep-alive client, and reports the distribution. Also reports the NVML
poll time the sidecar itself measured (infermeter_collector_duration_seconds{collector="gpu"}).
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from harness.fake_nvml import profiles
from harness.fake_nvml.build import build
from harness.sidecar import run_sidecar, value

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(scrapes: int, gpus: int, lib: Path | None = None) -> dict[str, object]:
    """`lib`: an already built fake NVML, else one is compiled here."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lib = lib or build(work)
        state = work / "nvml.json"
        profiles.write(state, profiles.state([profiles.gpu(i) for i in range(gpus)]))
        with run_sidecar(work, lib_dir=lib.parent, nvml_state=state) as sidecar:
            sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu=str(gpus - 1))
            # A keep-alive stdlib client asking for gzip as Prometheus does, and not
            # decompressing: the figure is the sidecar's time, not a Python client's.
            client = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
            headers = {"Accept-Encoding": "gzip", "Accept": "text/plain"}
            timings, size = [], 0
            for _ in range(5 + scrapes):
                started = time.perf_counter()
                client.request("GET", "/metrics", headers=headers)
                size = len(client.getresponse().read())
                timings.append(time.perf_counter() - started)
            client.close()
            timings = timings[5:]  # warm-up
            text = sidecar.metrics()
            poll = value(text, "infermeter_collector_duration_seconds", collector="gpu")
    ms = [t * 1000 for t in timings]
    return {
        "benchmark": "metrics_scrape",
        "gpus": gpus,
        "scrapes": scrapes,
        "bytes_gzip": size,
        "scrape_ms": {
            "median": round(statistics.median(ms), 3),
            "p90": round(percentile(ms, 0.9), 3),
            "p99": round(percentile(ms, 0.99), 3),
            "max": round(max(ms), 3),
        },
        "nvml_poll_ms_fake_driver": round((poll or 0) * 1000, 3),
        "machine": {
            "cpus": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scrapes", type=int, default=500)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "scrape.json")
    args = parser.parse_args()
    result = run(args.scrapes, args.gpus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
