"""`infermeter rules --cluster-label`: with it every grouping and join of the rules keeps the
cluster label (checked on the parsed PromQL), the output is promtool-clean, and two clusters
with the same namespace, pod and model keep separate baselines (a promtool unit test: only
the degraded cluster's 2x-baseline alert fires). Without it nothing changes (the shipped
files are compared byte for byte by test_rules.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser as pq
import pytest
import yaml

from infermeter.rules import Params, alert_rules, budget_rules, recording_rules
from infermeter.rules.cost import spend_labels
from infermeter.rules.render import alert_groups, recording_groups

CLUSTER = Params(cluster_label="cluster")
#: groups aggregated across clusters on purpose: a budget is a team's, not a cluster's
ACROSS_CLUSTERS = {"infermeter.spend.month_to_date", "infermeter.spend.alerts"}


def _global_record(record: str) -> bool:
    """Spend by team and feature (and what is built on it) sums over clusters."""
    return record.split("_currency:")[0] in spend_labels(CLUSTER)


def rules(params: Params) -> Iterator[tuple[str, dict[str, Any]]]:
    for group in [*recording_groups(params), *alert_groups(params)]:
        for rule in group["rules"]:
            yield group["name"], rule


def nodes(expr: Any) -> Iterator[Any]:
    """Every node of a parsed PromQL expression."""
    yield expr
    if isinstance(expr, pq.BinaryExpr):
        yield from nodes(expr.lhs)
        yield from nodes(expr.rhs)
    elif isinstance(expr, pq.AggregateExpr):
        yield from nodes(expr.expr)
        if expr.param is not None:
            yield from nodes(expr.param)
    elif isinstance(expr, pq.Call):
        for arg in expr.args:
            yield from nodes(arg)
    elif isinstance(expr, pq.ParenExpr | pq.UnaryExpr | pq.SubqueryExpr):
        yield from nodes(expr.expr)
    elif isinstance(expr, pq.MatrixSelector):
        yield from nodes(expr.vector_selector)


def groupings(expr: str) -> Iterator[tuple[str, list[str]]]:
    """(`by`, `without`, `on` or `ignoring`, labels) of every aggregation and vector match."""
    for node in nodes(pq.parse(expr)):
        if isinstance(node, pq.AggregateExpr) and node.modifier is not None:
            kind = "by" if node.modifier.type == pq.AggModifierType.By else "without"
            yield kind, list(node.modifier.labels)
        if isinstance(node, pq.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                kind = "on" if matching.type == pq.LabelModifierType.Include else "ignoring"
                yield kind, list(matching.labels)


def test_every_grouping_and_join_keeps_the_cluster_label() -> None:
    checked = 0
    for group, rule in rules(CLUSTER):
        name = rule.get("record") or rule["alert"]
        across = group in ACROSS_CLUSTERS or _global_record(rule.get("record", ""))
        for kind, labels in groupings(rule["expr"]):
            assert kind in ("by", "on"), f"{name}: {kind} ({labels})"
            if not labels:  # on (): a scalar-like join (this month), nothing to keep apart
                continue
            checked += 1
            if across:
                assert "cluster" not in labels, f"{name}: {kind} ({labels})"
            else:
                assert labels[0] == "cluster", f"{name}: {kind} ({', '.join(labels)})"
    assert checked > 60


def test_without_the_option_no_rule_names_a_cluster() -> None:
    for _, rule in rules(Params()):
        assert "cluster" not in yaml.safe_dump(rule)


def test_alerts_show_the_cluster_and_their_queries_select_it() -> None:
    for group, rule in rules(CLUSTER):
        if "alert" not in rule:
            continue
        summary, description = rule["annotations"]["summary"], rule["annotations"]["description"]
        if group in ACROSS_CLUSTERS:
            assert "cluster" not in summary + description, rule["alert"]
            continue
        assert summary.endswith(" (cluster {{ $labels.cluster }})"), rule["alert"]
        # a query in a template (`printf "...{namespace='%s'...}" $labels... | query`) must
        # read the alert's own cluster, or it shows the figure of another one
        for query in description.split("with printf ")[1:]:
            assert "cluster='%s'" in query.split('" ')[0], rule["alert"]
            assert query.split('" ')[1].startswith("$labels.cluster "), rule["alert"]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool comes with Debian's prometheus package (make test installs it)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_output_passes_promtool_check(tmp_path: Path) -> None:
    from infermeter.cli import main

    assert main(["rules", "--cluster-label", "cluster", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "recording-rules.yaml").read_text() == recording_rules(CLUSTER)
    assert (tmp_path / "alert-rules.yaml").read_text() == alert_rules(CLUSTER)
    assert (tmp_path / "budget-rules.yaml").read_text() == budget_rules(CLUSTER)
    names = ("recording-rules.yaml", "alert-rules.yaml", "budget-rules.yaml")
    result = promtool("check", "rules", *names, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("bad", ["a-b", "1cluster", "cluster}"])
def test_a_label_that_is_no_label_name_is_refused(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from infermeter.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["rules", "--cluster-label", bad])
    assert exit_.value.code == 2
    assert "not a Prometheus label name" in capsys.readouterr().err


# Two clusters, the same namespace, pod and model. Windows are shortened (a 2 h baseline) so
# that promtool evaluates 3.5 h instead of a day.
SHORT = {"baseline_window": "2h", "baseline_offset": "10m", "baseline_min_samples": 60}
BOUNDS = ("0.1", "0.2", "0.5", "1", "2", "5", "+Inf")  # TTFT buckets, seconds
NORMAL, SLOW = 1, 3  # bucket index every request of a phase lands in
ALERT = "InfermeterTTFTAboveBaseline"


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _counter(phases: list[tuple[int, float]]) -> str:
    """promtool's expanding notation for a counter growing by `inc` a minute per phase."""
    parts, value = [], 0.0
    for minutes, inc in phases:
        if not parts:
            parts.append(f"0+{inc:g}x{minutes}")
        else:
            parts.append(f"{value + inc:g}+{inc:g}x{minutes - 1}")
        value += inc * minutes
    return " ".join(parts)


def _cluster(name: str, buckets: list[tuple[int, int]], label: str) -> list[dict[str, str]]:
    """TTFT buckets and requests of one cluster: phases of (minutes, bucket index), 60/min."""
    labels = {label: name, "namespace": "ns", "pod": "p", "model": "m", "api": "chat"}
    series = [
        {
            "series": _labels(
                "infermeter_time_to_first_token_seconds_bucket", {**labels, "le": le}
            ),
            "values": _counter([(m, 60.0 if index <= i else 0.0) for m, index in buckets]),
        }
        for i, le in enumerate(BOUNDS)
    ]
    total = _counter([(m, 60.0) for m, _ in buckets])
    series.append(
        {"series": _labels("infermeter_requests_total", {**labels, "code": "200"}), "values": total}
    )
    return series


def _fired(params: Params, labels: dict[str, str], summary_tail: str, p99: str) -> dict[str, Any]:
    name = ALERT
    return {
        "exp_labels": {"severity": "critical", **labels, "namespace": "ns", "model": "m"},
        "exp_annotations": {
            "summary": f"Time to first token p99 of m is 5.0x its baseline{summary_tail}",
            "description": f"p99 time to first token of model m in ns is {p99}, 5.0x its median "
            f"p99 of the last {params.baseline_window} (alert above 2.0x). Engine now: queue "
            "unknown, KV cache unknown.",
            "runbook_url": f"{params.runbook_url}#{name.lower()}",
        },
    }


def two_clusters_test(params: Params, label: str) -> dict[str, Any]:
    """Cluster a degrades (p99 0.2 s -> 1 s) after 3 h; cluster b stays normal."""
    series = [
        *_cluster("a", [(180, NORMAL), (30, SLOW)], label),
        *_cluster("b", [(210, NORMAL)], label),
    ]
    if params.cluster_label:
        expected = [_fired(params, {label: "a"}, f" ({label} a)", "995ms")]
    else:  # without the option both clusters fold into one series: half slow, one alert
        expected = [_fired(params, {}, "", "990ms")]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "205m", "alertname": ALERT, "exp_alerts": expected},
            {"eval_time": "175m", "alertname": ALERT, "exp_alerts": []},
        ],
        "promql_expr_test": [
            {  # each cluster has its own baseline: the same normal p99 (0.1-0.2 s bucket)
                "expr": "namespace_model:infermeter_time_to_first_token_seconds:p99_5m:baseline_2h",
                "eval_time": "205m",
                "exp_samples": [
                    {"labels": _labels(
                        "namespace_model:infermeter_time_to_first_token_seconds:p99_5m:baseline_2h",
                        {label: c, "model": "m", "namespace": "ns"}), "value": 0.199}
                    for c in ("a", "b")
                ],
            }
        ]
        if params.cluster_label
        else [],
    }  # fmt: skip


def test_two_clusters_keep_separate_baselines(tmp_path: Path) -> None:
    label = "k8s_cluster"  # any name: not only `cluster`
    runs = {"with": Params(cluster_label=label, **SHORT), "without": Params(**SHORT)}
    for name, params in runs.items():
        (tmp_path / f"{name}-recording.yaml").write_text(recording_rules(params))
        (tmp_path / f"{name}-alerts.yaml").write_text(alert_rules(params))
        groups = [g["name"] for g in [*recording_groups(params), *alert_groups(params)]]
        test = {
            "rule_files": [f"{name}-recording.yaml", f"{name}-alerts.yaml"],
            "evaluation_interval": "1m",
            "group_eval_order": groups,
            "tests": [two_clusters_test(params, label)],
        }
        (tmp_path / f"{name}_test.yaml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool("test", "rules", "with_test.yaml", "without_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2
