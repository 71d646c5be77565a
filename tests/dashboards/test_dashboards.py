"""The checked-in dashboards: up to date with their source, and linted for the conventions
that make them importable as they are (datasource variable, units, $__rate_interval...)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from generate.dashboards import DASHBOARDS
from generate.dashboards.query import legend, substitute
from harness import yamls

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_DIR = ROOT / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DASHBOARD_DIR / name).read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


ALL = [pytest.param(name, id=name) for name in DASHBOARDS]


def test_uids_present_stable_and_unique() -> None:
    uids = [load(name)["uid"] for name in DASHBOARDS]
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)
    assert len(set(uids)) == len(uids)
    assert set(uids) == {"infermeter-overview", "infermeter-inference", "infermeter-gpu"}


@pytest.mark.parametrize("name", ALL)
def test_no_import_placeholders_or_hard_coded_datasources(name: str) -> None:
    text = (DASHBOARD_DIR / name).read_text()
    assert "${DS_" not in text
    assert "__inputs" not in text

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            source = node.get("datasource")
            if isinstance(source, dict) and source.get("type") != "grafana":
                assert source == DATASOURCE, source
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load(name))


@pytest.mark.parametrize("name", ALL)
def test_datasource_variable_and_chained_selectors(name: str) -> None:
    variables = {v["name"]: v for v in load(name)["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")
    namespace, model, pod = variables["namespace"], variables["model"], variables["pod"]
    assert namespace["query"].startswith("label_values(")
    assert '$namespace"' in model["query"]
    assert '$namespace"' in pod["query"]
    assert '$model"' in pod["query"]
    for variable in (namespace, model, pod):
        assert variable["datasource"] == DATASOURCE
        assert variable["includeAll"]
        assert variable["allValue"] == ".*"


@pytest.mark.parametrize("name", ALL)
def test_every_panel_has_a_query_a_unit_a_title_and_a_description(name: str) -> None:
    for panel in panels(load(name)):
        what = f"{name}: panel {panel.get('title')!r}"
        assert panel["title"], what
        assert 20 <= len(panel["description"]) <= 300, what
        assert "?" in panel["description"], f"{what}: the description states its question"
        assert panel["fieldConfig"]["defaults"]["unit"], what
        assert panel["datasource"] == DATASOURCE, what
        assert panel["targets"], what
        for target in panel["targets"]:
            assert target["expr"].strip(), what
            assert target["datasource"] == DATASOURCE, what


@pytest.mark.parametrize("name", ALL)
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in load(name)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|\w+_over_time)\(")


@pytest.mark.parametrize("name", ALL)
def test_rates_use_rate_interval(name: str) -> None:
    for expr in exprs(load(name)):
        assert not re.search(r"\[\d+[smhdwy]", expr), f"hard-coded range in {expr}"
        for match in RANGE_FUNCTION.finditer(expr):
            selector = re.compile(r"\[([^\]]*)\]").search(expr, match.end())
            assert selector is not None, expr
            assert selector.group(1) == "$__rate_interval", expr


def test_latency_panels_show_percentiles_baseline_and_its_multiple() -> None:
    inference = load("infermeter-inference.json")
    for metric in (
        "time_to_first_token_seconds",
        "inter_token_latency_seconds",
        "time_per_output_token_seconds",
        "request_duration_seconds",
    ):
        found = [p for p in panels(inference) if any(metric in e for e in exprs({"panels": [p]}))]
        latency = [p for p in found if any(":baseline_" in t["expr"] for t in p["targets"])]
        assert len(latency) == 1, metric
        legends = [t["legendFormat"] for t in latency[0]["targets"]]
        assert [lg.split()[-1] for lg in legends[:3]] == ["p50", "p90", "p99"]
        assert legends[3].endswith(" baseline")
        assert legends[4].endswith("2x baseline")
        assert latency[0]["targets"][4]["expr"].startswith("2 * ")


def test_ttft_heatmap_from_the_buckets() -> None:
    heatmaps = [p for p in panels(load("infermeter-inference.json")) if p["type"] == "heatmap"]
    ttft = [p for p in heatmaps if "time_to_first_token_seconds_bucket" in p["targets"][0]["expr"]]
    assert len(ttft) == 1
    target = ttft[0]["targets"][0]
    assert target["format"] == "heatmap"
    assert target["expr"].startswith("sum by (le) (increase(")
    assert ttft[0]["options"]["calculate"] is False


def test_required_panels_exist() -> None:
    """The issue's list, by metric or rule: a panel dropped by mistake fails here."""
    wanted = {
        "infermeter-inference.json": [
            "infermeter_requests_total", "infermeter_request_errors_total",
            "infermeter_requests_in_flight", "infermeter_request_completion_tokens_bucket",
            "infermeter_request_prompt_tokens_bucket", "infermeter_prompt_tokens:rate5m",
            "infermeter_output_tokens:rate5m", "infermeter_goodput:ratio_rate5m",
            "infermeter_event_loop_lag_seconds_bucket", "infermeter_event_loop_tasks",
            "scrape_duration_seconds", "infermeter_collector_duration_seconds",
        ],
        "infermeter-gpu.json": [
            "infermeter_gpu_utilization_ratio", "infermeter_gpu_memory_used_bytes",
            "infermeter_gpu_memory_total_bytes", "infermeter_gpu_temperature_celsius",
            "infermeter_gpu_memory_temperature_celsius", "infermeter_gpu_power_watts",
            "infermeter_gpu_power_limit_watts", "infermeter_gpu_clock_hertz",
            "infermeter_gpu_clock_event_active", "infermeter_gpu_xid_errors_total",
            "infermeter_gpu_ecc_errors_total", "infermeter_energy_per_output_token:joules",
            "infermeter_gpu_up", "infermeter_nvml_up",
        ],
        "infermeter-overview.json": [
            "infermeter_time_to_first_token_seconds:p99_5m", "infermeter_gpu_utilization_ratio",
            "infermeter_requests_in_flight", "infermeter_output_tokens:rate5m",
            "infermeter_gpus:count", "infermeter_cost_per_million_output_tokens:currency",
            'ALERTS{alertname=~"Infermeter.*"',
        ],
    }  # fmt: skip
    for name, needles in wanted.items():
        text = "\n".join(exprs(load(name)))
        missing = [needle for needle in needles if needle not in text]
        assert not missing, f"{name} lacks {missing}"


NAME = re.compile(r"\b((?:[a-z_]+:)?infermeter[_:][a-zA-Z0-9_:]*)")
BUILTIN = {"ALERTS", "scrape_duration_seconds"}


def test_every_metric_and_rule_a_dashboard_uses_exists() -> None:
    """Contract: raw names against the golden /metrics files, rule names against the
    checked-in recording rules, so a rename there fails here."""
    golden = "\n".join(p.read_text() for p in (ROOT / "tests/fixtures/golden").glob("*.prom"))
    exported = set(re.findall(r"^# TYPE (\S+) ", golden, re.MULTILINE))
    recorded = {
        rule["record"]
        for rules_file in ("recording-rules.yaml", "tests/budget-rules.yaml")
        for group in yamls.load((ROOT / "deploy/prometheus" / rules_file).read_text())["groups"]
        for rule in group["rules"]
    }
    missing = set()
    for name in DASHBOARDS:
        for expr in exprs(load(name)):
            for used in NAME.findall(expr):
                if ":" in used:
                    if used not in recorded:
                        missing.add(used)
                elif re.sub(r"_(bucket|sum|count)$", "", used) not in exported:
                    missing.add(used)
    assert not missing, (
        f"used by a dashboard, absent from golden files / recording rules: {missing}"
    )


def test_substitute_and_legend() -> None:
    expr = 'rate(x{namespace=~"$namespace", pod=~"${pod}", model=~"$model"}[$__rate_interval])'
    assert substitute(expr, "15s") == 'rate(x{namespace=~".*", pod=~".*", model=~".*"}[15s])'
    assert legend("{{pod}} GPU {{ gpu }}", {"pod": "p", "gpu": "0"}) == "p GPU 0"
    assert legend("__auto", {"__name__": "up", "job": "j"}) == 'up{job="j"}'
