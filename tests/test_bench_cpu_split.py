"""`bench.cpu_split` at a tiny size: every path it starts forwards the rounds' events and gets
a CPU figure, and the per-request / per-event split comes out for the Python proxies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import cpu_split
from harness.sidecar import demo_upstream

pytestmark = pytest.mark.e2e


def test_cpu_split_measures_every_path(tmp_path: Path) -> None:
    with (
        demo_upstream(tmp_path) as upstream,
        cpu_split._paths(tmp_path, upstream, ["floor", "infermeter"]) as paths,
    ):
        rows = asyncio.run(cpu_split.per_event(paths, streams=2, rounds=2, per_stream=1))
        parts = asyncio.run(cpu_split.split(*paths["infermeter"], streams=2, requests=10))
    assert set(rows) == {"floor", "infermeter"}
    for row in rows.values():
        assert 0 < row["q1"] <= row["us_per_event"] <= row["q3"]
        assert "vs_nginx" not in row  # nginx did not run
    assert parts["us_per_request"] > 0
    assert parts["us_per_event"] > 0
