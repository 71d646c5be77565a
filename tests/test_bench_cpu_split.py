"""`bench.cpu_split` at a tiny size, on the floor (its cheapest path; the sidecar is started by
the same launcher as everywhere else): the rounds' events are forwarded and get a CPU figure,
and the per-request / per-event split comes out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import cpu_split
from harness.sidecar import demo_upstream

pytestmark = pytest.mark.e2e


def test_cpu_split_measures_a_path_and_splits_its_cost(tmp_path: Path) -> None:
    with (
        demo_upstream(tmp_path) as upstream,
        cpu_split.start_paths(tmp_path, upstream, ["floor"]) as paths,
    ):
        fast = {"ttft": 0.005, "itl": 0.001}  # the figures do not need the bench's pace
        rows = asyncio.run(cpu_split.per_event(paths, streams=2, rounds=2, per_stream=1, **fast))
        parts = asyncio.run(cpu_split.split(*paths["floor"], streams=2, requests=10, **fast))
    assert set(rows) == {"floor"}
    for row in rows.values():
        assert 0 < row["q1"] <= row["us_per_event"] <= row["q3"]
        assert "vs_nginx" not in row  # nginx did not run
    assert parts["us_per_request"] > 0
    assert parts["us_per_event"] > 0
