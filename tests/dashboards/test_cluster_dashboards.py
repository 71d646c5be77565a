"""Dashboards for several clusters (`python -m generate.dashboards --cluster-label`): a
single-valued cluster variable first, and the cluster in every selector the variables narrow
(checked on the parsed PromQL); what carries no cluster selector is exactly what the rules
record across clusters. Without the option the files are the shipped ones (test_dashboards)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as pq
import pytest

from generate.dashboards import DASHBOARDS
from generate.dashboards.__main__ import main as generate
from generate.dashboards.builder import to_json, with_cluster
from infermeter.rules import Params
from infermeter.rules.cost import budget, spend_labels
from infermeter.rules.render import recording_groups

LABEL = "k8s_cluster"  # any name: the variable is `cluster` whatever the label is called
MATCHER = (LABEL, "$cluster")


def cluster_json(name: str) -> dict[str, Any]:
    return to_json(with_cluster(DASHBOARDS[name], LABEL))


def selectors(expr: str) -> Iterator[Any]:
    """Every vector selector of a dashboard query (Grafana's variables made parseable)."""
    pending = [pq.parse(expr.replace("$__rate_interval", "5m"))]
    while pending:
        node = pending.pop()
        if isinstance(node, pq.VectorSelector):
            yield node
        elif isinstance(node, pq.BinaryExpr):
            pending += [node.lhs, node.rhs]
        elif isinstance(node, pq.AggregateExpr):
            pending += [node.expr] + ([node.param] if node.param is not None else [])
        elif isinstance(node, pq.Call):
            pending += list(node.args)
        elif isinstance(node, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
            pending.append(node.expr)
        elif isinstance(node, pq.MatrixSelector):
            pending.append(node.vector_selector)


def across_clusters() -> set[str]:
    """Records the rules keep across clusters (spend by team and feature, the objective) and
    the budgets: the dashboards must not select them by cluster."""
    params = Params(cluster_label=LABEL)
    records = {rule["record"] for group in recording_groups(params) for rule in group["rules"]}
    return {
        name
        for name in records
        if name.split("_currency:")[0] in spend_labels(params) or name.startswith("infermeter:")
    } | {budget(params)}


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_cluster_variable_first_and_single_valued(name: str) -> None:
    variables = cluster_json(name)["templating"]["list"]
    assert [v["name"] for v in variables] == ["datasource", "cluster", "namespace", "model", "pod"]
    cluster = variables[1]
    assert cluster["query"] == f"label_values(infermeter_build_info, {LABEL})"
    assert (cluster["multi"], cluster["includeAll"], cluster["hide"]) == (False, False, 0)
    for chained in variables[2:]:
        assert f'{LABEL}="$cluster"' in chained["query"], chained["name"]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_narrowed_selector_selects_the_cluster(name: str) -> None:
    global_records = across_clusters()
    narrowed = unscoped = 0
    for panel in cluster_json(name)["panels"]:
        for target in panel.get("targets", []):
            for selector in selectors(target["expr"]):
                matchers = [(m.name, m.value) for m in selector.matchers.matchers]
                if not matchers:
                    assert selector.name in global_records, (panel["title"], selector.name)
                    unscoped += 1
                    continue
                assert MATCHER in matchers, (panel["title"], target["expr"])
                assert selector.name not in global_records, (panel["title"], selector.name)
                narrowed += 1
    assert narrowed >= 20
    if name == "infermeter-overview.json":
        assert unscoped >= 4


def test_cli_writes_cluster_dashboards(tmp_path: Path) -> None:
    assert generate(["--cluster-label", LABEL, "--out", str(tmp_path)]) == 0
    for name in DASHBOARDS:
        assert json.loads((tmp_path / name).read_text()) == cluster_json(name)
