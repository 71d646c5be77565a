"""`make bench` in miniature: every section runs against real processes and yields figures.

Timing claims live in the benchmark's results, not here: this asserts only that each path
and each section produced its numbers, so a broken harness fails `make test`. One tiny run
(about 30 s) is shared by the tests; the nginx path has its own test, skipped (with the
reason) when nginx is not installed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import nginx
from bench.run import SMOKE

ROOT = Path(__file__).resolve().parents[1]
LATENCY_KEYS = [
    f"added_{name}_{q}_ms" for name in ("ttft", "itl", "event_delay") for q in ("p50", "p99")
]
pytestmark = pytest.mark.e2e


def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads((out / "bench.json").read_text()), out


def check_proxy(result: dict[str, Any], path: str) -> None:
    """Every figure the issue asks of a proxy path, at every level and rate."""
    assert set(result["latency"]) == {str(level) for level in SMOKE["levels"]}
    for level in result["latency"].values():
        row = level[path]
        assert row["requests"] > 0, row
        assert row["errors"] == 0, row
        for key in LATENCY_KEYS:
            assert finite(row[key]), (path, key)
        # each process's CPU clock (ns): even the smoke run's few requests register
        assert row["cpu_s_per_million_events"] > 0
        assert 0 <= row["client_cpu_share"] <= 2
    sustained = result["sustained"][path]
    assert sustained["steps"]
    assert sustained["ceiling"] == SMOKE["sustained"][-1]
    assert sustained["max_streams"] in (0, *SMOKE["sustained"])
    for step in sustained["steps"]:
        assert finite(step["added_event_p99_ms"])
        assert isinstance(step["ok"], bool)
    assert set(result["open_loop"]) == {str(rate) for rate in SMOKE["rates"]}
    for rate in result["open_loop"].values():
        assert rate[path]["requests"] > 0
        assert rate[path]["errors"] == 0
        for q in ("p50", "p99"):
            assert finite(rate[path][f"added_ttft_{q}_ms"])
            assert finite(rate[path][f"added_event_delay_{q}_ms"])


@pytest.mark.timeout(260)
def test_direct_and_infermeter_paths_and_every_section_report(
    bench: tuple[dict[str, Any], Path],
) -> None:
    result, out = bench
    assert {"direct", "infermeter"} <= set(result["paths"])
    for level in result["latency"].values():
        assert level["direct"]["requests"] > 0
        assert level["direct"]["errors"] == 0
        assert finite(level["direct"]["ttft_p99_ms"])
        assert finite(level["direct"]["upstream_cpu_share"])
    for rate in result["open_loop"].values():
        assert rate["direct"]["requests"] > 0
    check_proxy(result, "infermeter")

    memory = result["memory"]
    assert memory["streams_in_flight"] == memory["streams"] == SMOKE["open_streams"]
    assert memory["rss_open_mb"] > 0
    assert memory["rss_idle_mb"] > 0
    assert memory["rss_fresh_mb"] > 0

    accuracy = result["accuracy"]
    assert accuracy["matched"] == accuracy["requests"]
    assert finite(accuracy["abs_error_p50_ms"])
    assert finite(accuracy["abs_error_p99_ms"])

    assert result["scrape"]["exporter_only"]["scrape_ms"]["median"] > 0
    loaded = result["scrape"]["with_models"]
    assert loaded["models_seen"] == SMOKE["models"]
    assert loaded["render"]["text"]["median_ms"] > 0
    assert loaded["render"]["openmetrics"]["median_ms"] > 0
    phases = loaded["streams_during_scrapes"]
    assert phases["quiet"]["events"] > 0
    assert phases["scraping"]["events"] > 0
    assert phases["scraping"]["scrapes"] >= 1
    for phase in phases.values():
        assert phase["loop_lag"]["probes"] > 0
        assert finite(phase["loop_lag"]["p99_ms"])
        assert phase["sidecar_itl"]["observations"] > 0
        assert 0 <= phase["sidecar_itl"]["share_above"] <= 1

    rss = result["workers"]["rss"]
    assert len(rss["1"]["workers_mb"]) == 1
    assert len(rss["2"]["workers_mb"]) == 2
    assert rss["1"]["supervisor_mb"] > 0
    assert finite(rss["extra_worker_mb"])
    for run in ("pinned", "shared_two_workers"):
        searched = result["workers"][run]
        if "skipped" in searched:
            continue
        assert searched["infermeter"]["steps"], run
        assert searched["infermeter"]["max_streams"] in (0, *SMOKE["sustained"])

    assert set(result["section_seconds"]) >= {
        "latency",
        "sustained",
        "open_loop",
        "memory",
        "accuracy",
        "scrape",
        "scrape_load",
        "workers",
    }
    assert (out / "latency_vs_concurrency.png").stat().st_size > 10_000


@pytest.mark.timeout(260)
def test_nginx_path_reports(bench: tuple[dict[str, Any], Path]) -> None:
    if not nginx.available():
        pytest.skip("nginx is not installed (apt-get install nginx): its path was not run")
    result, _ = bench
    assert "nginx" in result["paths"]
    check_proxy(result, "nginx")
