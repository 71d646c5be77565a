"""The chart's PrometheusRule and dashboard ConfigMaps are the one rules source and dashboards/.

Helm cannot read outside the chart, so it carries generated copies (generate/chart_files.py;
tests/test_generated.py fails when a copy drifts): these tests fail when what the chart
renders from them is not the source.
"""

from __future__ import annotations

import json

from generate import chart_files
from harness import yamls
from harness.helm import ROOT, one, render

RULES = ROOT / "deploy" / "prometheus"


def test_prometheus_rule_is_the_rendered_rules() -> None:
    expected = []
    for name in chart_files.RULE_FILES:
        expected += yamls.load((RULES / name).read_text())["groups"]
    expected += yamls.load((RULES / "budget-rules.yaml").read_text())["groups"]  # none set
    assert expected
    rule = one(render(sets=("prometheusRule.enabled=true",), monitoring=True), "PrometheusRule")
    assert rule["spec"]["groups"] == expected


def test_prometheus_rule_parts_can_be_left_out() -> None:
    recording = yamls.load((RULES / "recording-rules.yaml").read_text())["groups"]
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
