"""`make demo`: the real sidecar in front of the demo upstream, with a little traffic.

GPUs: this machine's, or without one 2 simulated GPUs from the tests' fake
libnvidia-ml.so.1, whose figures move every second so a dashboard has something alive.
Inference: `infermeter demo-upstream` (a simulated OpenAI-compatible server) behind the
proxy, and a background client sending a streaming chat request every half second.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import openai

from harness import http_client
from harness.fake_nvml import profiles
from harness.fake_nvml.build import build
from harness.sidecar import free_port

INFERMETER = str(Path(sys.executable).with_name("infermeter"))
KV_CAPACITY = 8  # sequences the demo engine's simulated KV cache holds


def real_nvml_present() -> bool:
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


def animate(path: Path, tick: int) -> None:
    devices = []
    for index in range(2):
        wave = 0.5 + 0.45 * math.sin(tick / 8 + index)
        devices.append(
            profiles.gpu(
                index,
                utilization_gpu=round(100 * wave),
                utilization_memory=round(60 * wave),
                power_usage_mw=round(120_000 + 500_000 * wave),
                temperature_gpu=round(35 + 40 * wave),
                energy_mj=1_000_000_000 + tick * 400_000,
            )
        )
    profiles.write(path, profiles.state(devices))


def gpu_count(url: str) -> int:
    for _ in range(100):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text: str = response.read().decode()
            count = text.count("infermeter_gpu_up{")
            if count:
                return count
        except OSError:
            pass
        time.sleep(0.1)
    return 0


def traffic(proxy: str, stop: threading.Event) -> None:
    """Streaming chat requests through the proxy, as a user's application would send."""
    client = openai.OpenAI(api_key="demo", base_url=proxy + "/v1", max_retries=0)
    models = ("llama-3.1-8b-instruct", "qwen2.5-7b-instruct")
    n = 0
    while not stop.wait(0.5):
        n += 1
        try:
            for _ in client.chat.completions.create(
                model=models[n % 2],
                messages=[{"role": "user", "content": "Say something."}],
                stream=True,
                max_tokens=16 + n % 32,
                stream_options={"include_usage": True},
            ):
                pass
        except openai.OpenAIError as exc:
            print(f"demo traffic: {exc}", file=sys.stderr)


def waves(proxy: str, stop: threading.Event, capacity: int) -> None:
    """Every 30 s, 20 s of twice the demo engine's KV capacity in concurrent streams: its
    queue and KV cache (the Saturation panels) climb, then drain."""
    body = {
        "model": "llama-3.1-8b-instruct",
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
    }

    def user(until: float) -> None:
        with http_client.Client(timeout=60) as client:
            while time.monotonic() < until and not stop.is_set():
                try:
                    with client.stream("POST", proxy + "/v1/chat/completions", json=body) as r:
                        for _ in r.iter_raw():
                            pass
                except httpx.HTTPError:
                    time.sleep(0.5)

    while not stop.wait(10):
        until = time.monotonic() + 20
        users = [
            threading.Thread(target=user, args=(until,), daemon=True) for _ in range(2 * capacity)
        ]
        for thread in users:
            thread.start()
        for thread in users:
            thread.join()


def main() -> int:
    port = int(os.environ.get("DEMO_PORT", "8091"))
    proxy_port = int(os.environ.get("DEMO_PROXY_PORT", "8090"))
    seconds = float(os.environ.get("DEMO_SECONDS", "0")) or math.inf
    url = f"http://127.0.0.1:{port}/metrics"
    env = dict(os.environ)
    workdir = Path(tempfile.mkdtemp(prefix="infermeter-demo-"))
    state = workdir / "gpus.json"
    simulated = not real_nvml_present()
    if simulated:
        env["LD_LIBRARY_PATH"] = str(build(workdir).parent)
        env["FAKE_NVML_CONFIG"] = str(state)
        animate(state, 0)
        print("No NVIDIA driver here: serving 2 SIMULATED GPUs from the fake NVML library")
        print(f"  (harness/fake_nvml, state file {state}).")
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            INFERMETER,
            "demo-upstream",
            "--listen",
            f"127.0.0.1:{upstream_port}",
            "--jitter",
            "0.3",
            "--kv-capacity",
            str(KV_CAPACITY),
        ],
        stderr=subprocess.DEVNULL,
    )
    sidecar = subprocess.Popen(
        [
            INFERMETER,
            "serve",
            "--metrics-listen",
            f"127.0.0.1:{port}",
            "--listen",
            f"127.0.0.1:{proxy_port}",
            "--upstream",
            f"http://127.0.0.1:{upstream_port}",
        ],
        env=env,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stop = threading.Event()
    sender = threading.Thread(
        target=traffic, args=(f"http://127.0.0.1:{proxy_port}", stop), daemon=True
    )
    burster = threading.Thread(
        target=waves, args=(f"http://127.0.0.1:{proxy_port}", stop, KV_CAPACITY), daemon=True
    )
    found = 0
    try:
        found = gpu_count(url)
        sender.start()
        burster.start()
        print(f"\ninfermeter is serving {found} GPUs and proxying a simulated inference server.")
        print("Demo traffic flows through the proxy. Try:\n")
        print(f"  curl -s {url} | grep '^infermeter_gpu'")
        print(f"  curl -s {url} | grep '^infermeter_time_to_first_token_seconds_count'")
        print(f"  curl -s {url} | grep '^infermeter_engine_'   # queue and KV cache, in waves")
        print(
            f"  curl -sN http://127.0.0.1:{proxy_port}/v1/chat/completions "
            "-H 'content-type: application/json' "
            """-d '{"model": "m", "stream": true, """
            """"messages": [{"role": "user", "content": "hi"}]}'"""
        )
        print("\nCtrl-C stops the demo.")
        started, tick = time.monotonic(), 0
        while time.monotonic() - started < seconds and sidecar.poll() is None:
            time.sleep(1)
            tick += 1
            if simulated:
                animate(state, tick)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for proc in (sidecar, upstream):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=10)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
