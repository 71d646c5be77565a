"""`bench.floor`, the yardstick proxy of `bench.proxy_latency --floor`, relays for real:
every event of every request arrives, on keep-alive connections, through its pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.floor import floor_proxy
from harness.loadgen import request_bytes, run_load
from harness.sidecar import demo_upstream

pytestmark = pytest.mark.e2e
TOKENS = 6


def test_the_floor_relays_every_event_of_every_request(tmp_path: Path) -> None:
    with demo_upstream(tmp_path) as upstream, floor_proxy(upstream) as (port, _):
        sample = asyncio.run(
            run_load("127.0.0.1", port, 3, 2, request_bytes(0.0, 0.001, TOKENS), stagger=0.01)
        )
    assert (sample.requests, sample.errors) == (6, 0)
    assert len(sample.ttft) == 6
    assert len(sample.gaps) == 6 * (TOKENS - 1)
