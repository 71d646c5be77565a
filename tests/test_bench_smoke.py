"""`make bench` in miniature: every section runs against real processes and yields figures.

Timing claims live in the benchmark's results, not here: this asserts only that each path
and each section produced its numbers, so a broken harness fails `make test`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from bench import nginx

ROOT = Path(__file__).resolve().parents[1]


def finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_every_section_of_the_benchmark_runs_and_reports(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=280,
    )
    result = json.loads((tmp_path / "bench.json").read_text())
    proxies = ["infermeter"] + (["nginx"] if nginx.available() else [])
    assert set(result["paths"]) == {"direct", *proxies}
    for level in result["latency"].values():
        assert level["direct"]["requests"] > 0
        for path in proxies:
            row = level[path]
            assert row["errors"] == 0
            for key in ("added_ttft_p50_ms", "added_ttft_p99_ms", "added_event_delay_p99_ms"):
                assert finite(row[key]), (path, key)
            assert row["cpu_s_per_million_events"] > 0
    for path in proxies:
        assert result["sustained"][path]["steps"], path
        for rate in result["open_loop"].values():
            assert rate[path]["requests"] > 0
            assert finite(rate[path]["added_ttft_p99_ms"])
    memory = result["memory"]
    assert memory["streams_in_flight"] == memory["streams"]
    assert memory["rss_open_mb"] > 0
    assert result["accuracy"]["matched"] == result["accuracy"]["requests"]
    assert finite(result["accuracy"]["abs_error_p99_ms"])
    assert result["scrape"]["exporter_only"]["scrape_ms"]["median"] > 0
    loaded = result["scrape"]["with_models"]
    assert loaded["render"]["openmetrics"]["median_ms"] > 0
    assert loaded["streams_during_scrapes"]["scraping"]["scrapes"] >= 1
    assert loaded["streams_during_scrapes"]["quiet"]["events"] > 0
    assert (tmp_path / "latency_vs_concurrency.png").stat().st_size > 10_000
