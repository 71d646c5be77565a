"""`make demo`: the real sidecar on this machine's GPUs, or on 2 simulated ones without.

Without a GPU it loads the tests' fake libnvidia-ml.so.1 and moves the simulated figures
every second so a dashboard has something alive to show.
"""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.fake_nvml import profiles
from tests.fake_nvml.build import build

INFERMETER = str(Path(sys.executable).with_name("infermeter"))


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
                text = response.read().decode()
            count = text.count("infermeter_gpu_up{")
            if count:
                return count
        except OSError:
            pass
        time.sleep(0.1)
    return 0


def main() -> int:
    port = int(os.environ.get("DEMO_PORT", "8091"))
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
        print(f"  (tests/fake_nvml, state file {state}).")
    sidecar = subprocess.Popen(
        [INFERMETER, "serve", "--metrics-listen", f"127.0.0.1:{port}"], env=env
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    found = 0
    try:
        found = gpu_count(url)
        print(f"\ninfermeter is serving {found} GPUs. Try:\n")
        print(f"  curl -s {url} | grep '^infermeter_gpu'\n")
        print("Ctrl-C stops the demo.")
        started, tick = time.monotonic(), 0
        while time.monotonic() - started < seconds and sidecar.poll() is None:
            time.sleep(1)
            tick += 1
            if simulated:
                animate(state, tick)
    except KeyboardInterrupt:
        pass
    finally:
        if sidecar.poll() is None:
            sidecar.send_signal(signal.SIGTERM)
            sidecar.wait(timeout=10)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
