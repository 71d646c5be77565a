"""Every panel query returns data from a real Prometheus that scraped real sidecars.

Two `infermeter serve` processes (fake-NVML GPUs) in front of the demo upstream, a real
Prometheus with the recording and alerting rules, a scripted workload (tests/dashboards/
live.py). Each query runs as Grafana would run it with every variable on "All" and
`$__rate_interval` at 15 s (4 scrapes at the 1 s interval, rounded up), over the workload.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from generate.dashboards import DASHBOARDS
from generate.dashboards.builder import Panel, Row
from generate.dashboards.query import Prometheus, PrometheusError, label_values, run
from harness import yamls
from harness.dashboards_live import PRICES, TEAMS, drive, live
from infermeter.prices import parse

pytestmark = pytest.mark.e2e
RATE_INTERVAL = "15s"
WORKLOAD_SECONDS = 20.0

# (dashboard uid, panel title, target index) -> why it may return nothing here. The
# workload injects what would otherwise be empty (XID events, ECC errors, a firing alert,
# throttling, errors), so nothing needs to be listed today; add an entry, with its reason,
# only for a query that cannot get data from a short run with simulated GPUs.
ALLOWED_EMPTY: dict[tuple[str, str, int], str] = {}


def _panels() -> list[tuple[str, Panel]]:
    return [
        (dashboard.uid, panel)
        for dashboard in DASHBOARDS.values()
        for row in dashboard.rows
        for panel in row.panels
        if not isinstance(panel, Row)
    ]


def test_allow_list_names_real_panels() -> None:
    known = {(uid, panel.title, i) for uid, panel in _panels() for i in range(len(panel.targets))}
    assert set(ALLOWED_EMPTY) <= known


@dataclass(frozen=True)
class Observed:
    prometheus: str
    started: float
    end: float
    workdir: Path


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, fake_nvml_dir: Path) -> Iterator[Observed]:
    """The stack after the scripted workload, still up for the tests to query."""
    workdir = tmp_path_factory.mktemp("live")
    with live(workdir, fake_nvml_dir) as stack:
        end = drive(stack, WORKLOAD_SECONDS)
        time.sleep(1.5)  # a last scrape and rule evaluation
        yield Observed(stack.prometheus, stack.started, end, workdir)


def test_every_panel_query_returns_data(observed: Observed) -> None:
    prometheus = Prometheus(observed.prometheus)
    empty, failed = [], []
    for uid, panel in _panels():
        for index, target in enumerate(panel.targets):
            key = (uid, panel.title, index)
            try:
                result = run(prometheus, target, observed.started, observed.end, 1.0, RATE_INTERVAL)
            except PrometheusError as exc:
                failed.append(f"{key}: {exc}")
                continue
            if not any(series.values for series in result) and key not in ALLOWED_EMPTY:
                empty.append(f"{key}: {target.expr}")
    if empty or failed:
        log = (observed.workdir / "prometheus.log").read_text()[-2000:]
        raise AssertionError("\n".join(["query errors:", *failed, "no data:", *empty, log]))


def test_template_variables_list_the_workload(observed: Observed) -> None:
    prometheus = Prometheus(observed.prometheus)
    variables = {
        v.name: label_values(prometheus, v.query)
        for dashboard in DASHBOARDS.values()
        for v in dashboard.variables
    }
    assert variables["namespace"] == ["inference"]
    # plus "unknown" once a malformed request (no model) went through
    assert {"llama-3.1-8b-instruct", "qwen2.5-32b-instruct"} <= set(variables["model"])
    assert variables["pod"] == ["vllm-llama-0", "vllm-qwen-0"]


def test_preview_draws_every_dashboard(observed: Observed, tmp_path: Path) -> None:
    """The preview renderer end to end: one PNG per dashboard, with something drawn."""
    pytest.importorskip("matplotlib")
    from generate.dashboards import preview

    written = preview.render_all(
        observed.prometheus, tmp_path, start=observed.started, end=observed.end, step=1.0,
        rate_interval=RATE_INTERVAL,
    )  # fmt: skip
    assert sorted(p.name for p in written) == sorted(
        name.replace(".json", ".png") for name in DASHBOARDS
    )
    for path in written:
        assert path.read_bytes().startswith(b"\x89PNG")
        assert path.stat().st_size > 50_000


def test_each_team_pays_its_tokens_times_the_price(observed: Observed) -> None:
    """Through the real sidecars and Prometheus: a team's cost is exactly the tokens the
    upstream reported for it times the prices file's price of each model."""
    book = parse(yamls.load(PRICES))
    prometheus = Prometheus(observed.prometheus)
    at = observed.end + 1.0  # after the last scrape of the finished workload

    def by(expr: str) -> dict[tuple[str, str], float]:
        return {
            (s.labels["team"], s.labels["model"]): s.values[-1] for s in prometheus.query(expr, at)
        }

    prompt = by("sum by (team, model) (infermeter_prompt_tokens_total)")
    completion = by("sum by (team, model) (infermeter_completion_tokens_total)")
    cost = by('sum by (team, model) (infermeter_cost_total{currency="USD"})')
    assert {team for team, _ in cost} == set(TEAMS)
    for key, spent in cost.items():
        price = book.price(key[1])
        expected = price.cost(int(prompt[key]), int(completion[key]))
        assert spent == pytest.approx(expected, rel=1e-9), key
    assert all(v > 0 for v in cost.values())
