"""A live stack the dashboards are checked and drawn against: real processes on loopback.

Two pods' worth of `infermeter serve` (fake-NVML GPUs from the tests' libnvidia-ml.so.1, in
front of `infermeter demo-upstream`), a real Prometheus scraping them every second with the
recording and alerting rules loaded, and a scripted workload: streaming chat requests of
two models with varying lengths, some without usage reports, some bad requests, some
clients that leave mid-stream, a slowdown in the middle, GPU figures that move, two XID
events and a few corrected ECC errors.

`python -m harness.dashboards_live --out docs/images` (`make dashboards-preview`) runs it for
30 s and draws the preview PNGs.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import http_client
from harness.fake_nvml import profiles
from harness.sidecar import (
    Sidecar,
    SidecarClient,
    demo_upstream,
    free_port,
    run_sidecar,
    terminate,
    wait_for,
)
from infermeter.rules import Params, alert_rules, budget_rules, recording_rules

NAMESPACE = "inference"
# Baselines normally need a day of history (offset 1 h, 120 samples); here the same rules
# with a 1 s offset and 1 sample, so the baseline series exist within seconds, under their
# real names (the name carries only the window, 1d).
# The month-to-date chain runs every second (not every minute) for the same reason.
TEAMS = ("ads", "search", "support")
FEATURES = ("chat", "summarize")
RULES = Params(
    baseline_offset="1s",
    baseline_min_samples=1,
    month_to_date_interval="1s",
    budgets=dict.fromkeys(TEAMS, 0.01),  # tiny: a few seconds of traffic show on the gauge
)
PRICES = """\
currency: USD
default: {prompt: 0.5, completion: 1.5}
models:
  "llama-3.1-8b*": {prompt: 0.05, completion: 0.10}
"""


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    model: str
    gpus: int
    ttft: float  # seconds, before jitter
    itl: float


PODS = (
    Pod("vllm-llama-0", "llama-3.1-8b-instruct", 2, 0.08, 0.012),
    Pod("vllm-qwen-0", "qwen2.5-32b-instruct", 1, 0.16, 0.022),
)


@dataclass
class Live:
    prometheus: str
    upstream: str
    sidecars: dict[str, Sidecar]
    states: dict[str, Path]
    started: float = field(default_factory=time.time)


def _prometheus_config(sidecars: Mapping[str, SidecarClient]) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["recording-rules.yaml", "alert-rules.yaml", "budget-rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "infermeter",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{sidecar.port}"],
                        "labels": {"namespace": NAMESPACE, "pod": pod},
                    }
                    for pod, sidecar in sidecars.items()
                ],
            }
        ],
    }


@contextmanager
def run_prometheus(workdir: Path, sidecars: Mapping[str, SidecarClient]) -> Iterator[str]:
    """A real Prometheus scraping `sidecars` (processes or in-process), with our rules."""
    binary = shutil.which("prometheus")
    assert binary, "Debian package prometheus (make test installs it)"
    (workdir / "recording-rules.yaml").write_text(recording_rules(RULES))
    (workdir / "alert-rules.yaml").write_text(alert_rules(RULES))
    (workdir / "budget-rules.yaml").write_text(budget_rules(RULES))
    (workdir / "prometheus.yaml").write_text(yaml.safe_dump(_prometheus_config(sidecars)))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yaml'}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
        try:
            return http_client.get(url + "/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=30, what="prometheus ready")
        yield url
    finally:
        terminate(proc)


def gpu_state(pod: Pod, tick: float, xids: int, ecc: int) -> dict[str, Any]:
    """The pod's GPUs at `tick` seconds: busy in waves, hotter and hungrier when busy."""
    devices = []
    for index in range(pod.gpus):
        wave = 0.55 + 0.4 * math.sin(tick / 6 + index + len(pod.name))
        devices.append(
            profiles.gpu(
                index,
                uuid=f"GPU-{len(pod.name):04x}{index:04x}-1111-2222-3333-{index:012x}",
                utilization_gpu=round(100 * wave),
                utilization_memory=round(70 * wave),
                memory_used=round((60 + 8 * wave + index) * profiles.GiB),
                temperature_gpu=round(45 + 30 * wave),
                temperature_memory=round(52 + 30 * wave),
                power_usage_mw=round(150_000 + 500_000 * wave),
                # energy integrates the power drawn so far (mJ)
                energy_mj=round(1e9 + tick * (150_000 + 500_000 * 0.55)),
                clock_sm_mhz=round(1400 + 580 * (1 - wave)),
                clocks_event_reasons=0x004 if wave > 0.85 else (0x001 if wave < 0.3 else 0),
                ecc_corrected_volatile=ecc if index == 0 else 0,
            )
        )
    events = [{"id": i + 1, "device": 0, "xid": 13 if i < 2 else 79} for i in range(xids)]
    return profiles.state(devices, xid_events=events)


def _client(proxy: str, pod: Pod, stop: threading.Event, slow: threading.Event, seed: int) -> None:
    """One user of the pod: streaming chat, mostly well-behaved."""
    rng = random.Random(seed)
    url = proxy + "/v1/chat/completions"
    with http_client.Client(timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            factor = 2.5 if slow.is_set() else 1.0
            headers = {
                "x-demo-ttft": f"{pod.ttft * factor * rng.uniform(0.6, 1.6):.4f}",
                "x-demo-itl": f"{pod.itl * rng.uniform(0.8, 1.3):.4f}",
                "x-team": TEAMS[seed % len(TEAMS)],
                "x-feature": FEATURES[n % len(FEATURES)],
            }
            body: dict[str, Any] = {
                "model": pod.model,
                "stream": True,
                "max_tokens": rng.choice((8, 16, 24, 32, 48, 64, 96)),
                "messages": [{"role": "user", "content": "word " * rng.randint(20, 400)}],
            }
            if n % 7:  # every 7th without usage: output tokens are then estimated
                body["stream_options"] = {"include_usage": True}
            try:
                if n % 41 == 0:  # a malformed request: the upstream answers 400
                    client.post(url, content=b"{", headers={"content-type": "application/json"})
                elif n % 29 == 0:  # a client that leaves after the first bytes
                    with client.stream("POST", url, json=body, headers=headers) as response:
                        next(response.iter_raw(), None)
                else:
                    with client.stream("POST", url, json=body, headers=headers) as response:
                        for _ in response.iter_raw():
                            pass
            except httpx.HTTPError:
                time.sleep(0.05)


@contextmanager
def live(workdir: Path, lib_dir: Path) -> Iterator[Live]:
    """Start everything; the workload is `drive()`."""
    with ExitStack() as stack:
        upstream = stack.enter_context(demo_upstream(workdir, "--output-tokens", "96"))
        sidecars: dict[str, Sidecar] = {}
        states: dict[str, Path] = {}
        prices = workdir / "prices.yaml"
        prices.write_text(PRICES)
        for pod in PODS:
            states[pod.name] = workdir / f"{pod.name}-gpus.json"
            profiles.write(states[pod.name], gpu_state(pod, 0, 0, 0))
            sidecars[pod.name] = stack.enter_context(
                run_sidecar(
                    workdir,
                    "--gpu-poll-interval",
                    "0.5",
                    "--engine-metrics-interval",
                    "0.5",
                    "--attribute",
                    "team=X-Team",
                    "--attribute",
                    "feature=X-Feature",
                    "--prices",
                    str(prices),
                    lib_dir=lib_dir,
                    nvml_state=states[pod.name],
                    upstream=upstream,
                )
            )
        prometheus = stack.enter_context(run_prometheus(workdir, sidecars))
        yield Live(prometheus, upstream, sidecars, states)


def drive(stack: Live, seconds: float, clients_per_pod: int = 3) -> float:
    """The scripted workload for `seconds`; GPU figures move every half second.

    Returns the wall-clock time the workload ended (before its clients wind down)."""
    stop, slow = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=_client,
            args=(stack.sidecars[pod.name].proxy_url, pod, stop, slow, i * 31 + j),
            daemon=True,
        )
        for i, pod in enumerate(PODS)
        for j in range(clients_per_pod)
    ]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            phase = elapsed / seconds
            if 0.45 <= phase < 0.7:
                slow.set()
            else:
                slow.clear()
            xids = (phase > 0.3) + (phase > 0.5) + (phase > 0.75)
            ecc = 0 if phase < 0.5 else 3
            for pod in PODS:
                profiles.write(stack.states[pod.name], gpu_state(pod, elapsed, xids, ecc))
            time.sleep(0.5)
        return time.time()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def main() -> int:
    from generate.dashboards import preview
    from harness.fake_nvml.build import build

    parser = argparse.ArgumentParser(prog="python -m harness.dashboards_live")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--window", type=float, default=0.0, help="Seconds drawn; 0: all.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="infermeter-dashboards-"))
    lib_dir = build(workdir / "nvml").parent
    with live(workdir, lib_dir) as stack:
        print(f"workload for {args.seconds:g} s against {stack.prometheus}", flush=True)
        end = drive(stack, args.seconds)
        time.sleep(2)  # a last scrape and rule evaluation
        start = max(stack.started, end - args.window) if args.window else stack.started
        written = preview.render_all(
            stack.prometheus,
            args.out,
            start=start,
            end=end,
            step=max(1.0, (end - start) / 90),
            rate_interval="10s",
        )
    for path in written:
        print(f"wrote {path}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
