"""The chart's PrometheusRule and dashboard ConfigMaps are the one rules source and dashboards/.

Helm cannot read outside the chart, so it carries generated copies (generate.chart_files);
these tests fail when a copy or what the chart renders from it drifts from the source.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from generate import chart_files
from harness.helm import CHART, ROOT, one, render

RULES = ROOT / "deploy" / "prometheus"


def test_chart_copies_equal_their_sources() -> None:
    problems = chart_files.drift()
    assert not problems, f"run `python -m generate.chart_files`: {problems}"


def test_prometheus_rule_is_the_rendered_rules() -> None:
    expected = []
    for name in chart_files.RULE_FILES:
        expected += yaml.safe_load((RULES / name).read_text())["groups"]
    expected += yaml.safe_load((RULES / "budget-rules.yaml").read_text())["groups"]  # none set
    assert expected
    rule = one(render(sets=("prometheusRule.enabled=true",), monitoring=True), "PrometheusRule")
    assert rule["spec"]["groups"] == expected


def test_prometheus_rule_parts_can_be_left_out() -> None:
    recording = yaml.safe_load((RULES / "recording-rules.yaml").read_text())["groups"]
    sets = ("prometheusRule.enabled=true", "prometheusRule.alerts=false")
    rule = one(render(sets=sets, monitoring=True), "PrometheusRule")
    assert rule["spec"]["groups"] == recording


def test_dashboard_configmaps_are_the_dashboards() -> None:
    sources = {
        p.name: json.loads(p.read_text()) for p in sorted((ROOT / "dashboards").glob("*.json"))
    }
    sets = ("dashboards.enabled=true", "dashboards.namespace=grafana")
    maps = [m for m in render(sets=sets) if m["kind"] == "ConfigMap"]
    rendered = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "grafana"
        ((name, text),) = config_map["data"].items()
        rendered[name] = json.loads(text)
    assert rendered == sources  # an empty dashboards/ gives no ConfigMap, and passes


def test_chart_files_check_reports_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--check exits 1 naming the file when a copy is stale (so CI messages are useful)."""

    fake_chart = tmp_path / "chart"
    (fake_chart / "files" / "rules").mkdir(parents=True)
    (fake_chart / "files" / "rules" / "old.yaml").write_text("groups: []\n")
    monkeypatch.setattr(chart_files, "CHART", fake_chart)
    problems = chart_files.drift()
    assert "stale files/rules/old.yaml" in problems
    assert "missing files/rules/alert-rules.yaml" in problems
    assert chart_files.main(["--check"]) == 1
    chart_files.write()
    assert chart_files.drift() == []
    assert not (fake_chart / "files" / "rules" / "old.yaml").exists()
    assert CHART.exists()
