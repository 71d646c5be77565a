"""The spend, budget and availability rules as data, and `infermeter rules` with budgets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness import yamls
from harness.sidecar import INFERMETER
from infermeter.rules import Params, alert_rules, budget_rules, recording_rules
from infermeter.rules.availability import error_budget
from infermeter.rules.cost import seconds


def records(text: str) -> dict[str, str]:
    return {r["record"]: r["expr"] for g in yamls.load(text)["groups"] for r in g["rules"]}


def test_spend_is_recorded_per_attribution_label_and_model() -> None:
    params = Params(attribution_labels=("tenant",), budget_label="tenant")
    recorded = records(recording_rules(params))
    for label in ("tenant", "model"):
        for what in ("increase1h", "increase1d", "rate5m", "month_to_date"):
            assert f"{label}_currency:infermeter_spend:{what}" in recorded
    assert "team_currency:infermeter_spend:rate5m" not in recorded
    # exact and estimated spend are added, each may be absent, currency is kept apart
    expr = recorded["tenant_currency:infermeter_spend:rate5m"]
    for part in ("infermeter_cost_total", "infermeter_cost_estimated_total", " or ",
                 "by (tenant, currency)"):  # fmt: skip
        assert part in expr


def test_availability_counts_server_errors_and_429_only() -> None:
    name = "namespace_model:infermeter_availability_errors:ratio_rate1h"
    ratio = records(recording_rules())[name]
    for counted in ("upstream_connect", "upstream_timeout", "upstream_http_5xx", "stream_error",
                    "stream_truncated", 'code=~"429"'):  # fmt: skip
        assert counted in ratio
    for not_counted in ("client_disconnect", "upstream_http_4xx", "proxy_internal"):
        assert not_counted not in ratio
    assert "code=~" not in records(recording_rules(Params(availability_error_codes="")))[name]
    assert error_budget(Params(availability_objective=0.995)) == 0.005


def test_burn_rate_thresholds_follow_the_objective() -> None:
    alerts = {
        r["alert"]: r
        for g in yamls.load(alert_rules(Params(availability_objective=0.99)))["groups"]
        for r in g["rules"]
    }
    page = alerts["InfermeterAvailabilityBurnRatePage"]
    ticket = alerts["InfermeterAvailabilityBurnRateTicket"]
    for window, rate in (("1h", "14.4"), ("5m", "14.4"), ("6h", "6"), ("30m", "6")):
        assert f"ratio_rate{window} / 0.01 > {rate}" in page["expr"]
    for window in ("3d", "6h"):
        assert f"ratio_rate{window} / 0.01 > 1" in ticket["expr"]
    assert (page["labels"]["severity"], ticket["labels"]["severity"]) == ("critical", "warning")


def test_budgets_render_one_series_per_team() -> None:
    (group,) = yamls.load(budget_rules(Params(budgets={"b": 2.5, "a": 1e6}, currency="EUR")))[
        "groups"
    ]
    assert group["name"] == "infermeter.budgets"
    assert group["rules"] == [
        {"record": "team_currency:infermeter_spend_budget:monthly", "expr": "vector(1e+06)",
         "labels": {"team": "a", "currency": "EUR"}},
        {"record": "team_currency:infermeter_spend_budget:monthly", "expr": "vector(2.5)",
         "labels": {"team": "b", "currency": "EUR"}},
    ]  # fmt: skip
    assert yamls.load(budget_rules())["groups"][0]["rules"] == []


def test_rules_cli_writes_budgets_and_refuses_bad_ones(tmp_path: Path) -> None:
    run = [INFERMETER, "rules", "--out", str(tmp_path), "--budget", "search=5000"]
    run += ["--budget", "ads=12.5", "--currency", "EUR", "--attribution-labels", "team"]
    subprocess.run(run, check=True, timeout=60)
    written = (tmp_path / "budget-rules.yaml").read_text()
    assert written == budget_rules(Params(budgets={"search": 5000, "ads": 12.5}, currency="EUR"))
    recorded = records((tmp_path / "recording-rules.yaml").read_text())
    assert "feature_currency:infermeter_spend:rate5m" not in recorded
    bad = subprocess.run(
        [INFERMETER, "rules", "--budget", "search"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "expected NAME=AMOUNT" in bad.stderr


def test_month_to_date_step_follows_its_interval() -> None:
    recorded = records(recording_rules(Params(month_to_date_interval="1m30s")))
    assert "team_currency:infermeter_spend:rate5m * 90 " in (
        recorded["team_currency:infermeter_spend:month_to_date"] + " "
    )
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        seconds("90 seconds")
