"""`make demo` keeps working: the demo serves 2 simulated GPUs and exits cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.sidecar import free_port

ROOT = Path(__file__).parents[1]


def test_demo_serves_two_simulated_gpus() -> None:
    env = {
        **os.environ,
        "DEMO_SECONDS": "3",
        "DEMO_PORT": str(free_port()),
        "DEMO_PROXY_PORT": str(free_port()),
    }
    env.pop("LD_LIBRARY_PATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "harness.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 SIMULATED GPUs" in result.stdout
    assert "infermeter is serving 2 GPUs and proxying" in result.stdout
    assert "demo traffic:" not in result.stderr
    assert f"curl -s http://127.0.0.1:{env['DEMO_PORT']}/metrics" in result.stdout
