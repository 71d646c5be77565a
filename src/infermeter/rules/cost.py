"""Spend rules: spend per team, feature and model; month to date; budgets and forecasts.

Spend is `infermeter_cost_total` plus `infermeter_cost_estimated_total` (requests without a
usage report priced from their counted events): a budget must not look healthier because
an upstream omits usage. Dashboards show the estimated share on its own.

Month to date is a recording chain: every `month_to_date_interval` the rule adds the spend
of that interval (the 5 m spend rate times the interval) to its own previous value, and
starts again from zero when the month of its previous evaluation is not this month.
PromQL has no range "since the 1st", and `increase(x[31d])` would count last month too.
"""

from __future__ import annotations

import re
from typing import Any

from infermeter.rules.params import Params

COST = ("infermeter_cost_total", "infermeter_cost_estimated_total")
TOKENS = (
    "infermeter_prompt_tokens_total",
    "infermeter_completion_tokens_total",
    "infermeter_completion_tokens_estimated_total",
)
MONTH = "infermeter:month_to_date:month"


def total(metrics: tuple[str, ...], by: str, fn: str, window: str) -> str:
    """`sum by (by) (fn(m[window]))` added up over `metrics`, where any of them may be absent:
    a + b as `(a + b or a or b)`. One selector `{__name__=~"a|b"}` would not do: `rate` drops
    the name, and the exact and estimated series of one request class would then collide."""
    parts = [f"sum by ({by}) ({fn}({m}[{window}]))" for m in metrics]
    acc = parts[0]
    for part in parts[1:]:
        acc = f"({acc} + {part} or {acc} or {part})"
    return acc


def spend_labels(params: Params) -> tuple[str, ...]:
    return (*params.attribution_labels, "model")


def spend(label: str, what: str) -> str:
    return f"{label}_currency:infermeter_spend:{what}"


def budget(params: Params) -> str:
    return f"{params.budget_label}_currency:infermeter_spend_budget:monthly"


DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str) -> float:
    """A Prometheus duration (`1m`, `1m30s`) in seconds."""
    parts = DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * UNITS[u] for n, u in parts)


def month_seconds_left() -> str:
    """Seconds from now to the end of this month (UTC), as a scalar."""
    return "scalar((days_in_month() - day_of_month() + 1) * 86400 - hour() * 3600 - minute() * 60)"


def recording(params: Params) -> list[dict[str, Any]]:
    w = params.rate_window
    rules: list[dict[str, Any]] = []
    for label in spend_labels(params):
        by = f"{label}, currency"
        rules += [
            {"record": spend(label, "increase1h"), "expr": total(COST, by, "increase", "1h")},
            {"record": spend(label, "increase1d"), "expr": total(COST, by, "increase", "1d")},
            {"record": spend(label, f"rate{w}"), "expr": total(COST, by, "rate", w)},
        ]  # fmt: skip
    b = params.budget_label
    rules.append({
        "record": spend(b, f"rate{params.forecast_window}"),
        "expr": total(COST, f"{b}, currency", "rate", params.forecast_window),
    })  # fmt: skip
    nm = params.by("namespace, model")  # spend by team and feature: across clusters
    by_model = f"namespace_model_currency:infermeter_spend:rate{w}"
    requests = f"sum by ({nm}) (rate(infermeter_requests_total[{w}]))"
    rules += [
        {"record": by_model, "expr": total(COST, f"{nm}, currency", "rate", w)},
        {"record": f"namespace_model_currency:infermeter_cost_per_request:ratio_rate{w}",
         "expr": f"{by_model} / on ({nm}) group_left () {requests} >= 0"},
        {"record": f"{b}_currency:infermeter_cost_per_request:ratio_rate{w}",
         "expr": f"{spend(b, f'rate{w}')} / on ({b}) group_left () "
                 f"sum by ({b}) (rate(infermeter_requests_total[{w}])) >= 0"},
        {"record": f"namespace_model_currency:infermeter_cost_per_million_tokens:ratio_rate{w}",
         "expr": f"{by_model} / on ({nm}) group_left () {total(TOKENS, nm, 'rate', w)} * 1e6 >= 0"},
    ]  # fmt: skip
    return [{"name": "infermeter.spend", "rules": rules}, month_to_date(params)]


def month_to_date(params: Params) -> dict[str, Any]:
    """The month-to-date chain, in its own group evaluated every `month_to_date_interval`."""
    step = f"{seconds(params.month_to_date_interval):g}"
    w = params.rate_window
    rules: list[dict[str, Any]] = []
    # the previous value survives a Prometheus outage shorter than the look-back, and is
    # dropped when it was recorded in another month (MONTH is recorded after the chain)
    back = params.month_to_date_lookback
    same_month = f"on () (last_over_time({MONTH}[{back}]) == on () month())"
    for label in spend_labels(params):
        mtd = spend(label, "month_to_date")
        now = f"{spend(label, f'rate{w}')} * {step}"
        before = f"(last_over_time({mtd}[{back}]) and {same_month})"
        rules.append({"record": mtd, "expr": f"({now} + {before}) or {now} or {before}"})
    rules.append({"record": MONTH, "expr": "month()"})
    return {
        "name": "infermeter.spend.month_to_date",
        "interval": params.month_to_date_interval,
        "rules": rules,
    }


def budget_group(params: Params) -> dict[str, Any]:
    """Monthly budgets as series (one per budget_label value), for the budget alerts.

    Its own group so that the Helm chart can render it from values while every expression
    stays here: the chart's template must produce exactly this (a test compares them).
    """
    rules = [
        {
            "record": budget(params),
            "expr": f"vector({amount:g})",
            "labels": {params.budget_label: name, "currency": params.currency},
        }
        for name, amount in sorted(params.budgets.items())
    ]
    return {"name": "infermeter.budgets", "rules": rules}


def alerts(params: Params, alert: Any) -> list[dict[str, Any]]:
    """Budget alerts; `alert` builds one rule (render._alert, bound to params)."""
    b = params.budget_label
    mtd = spend(b, "month_to_date")
    used = f"{mtd} / on ({b}, currency) {budget(params)}"
    rate = spend(b, f"rate{params.forecast_window}")
    forecast = (
        f"({mtd} + on ({b}, currency) {rate} * {month_seconds_left()}) "
        f"/ on ({b}, currency) {budget(params)}"
    )
    who = f"{{{{ $labels.{b} }}}}"
    return [
        alert("InfermeterSpendBudget50", f"{used} >= 0.5 < 0.8", params.budget_for, "warning",
              f"{who} has spent {{{{ $value | humanizePercentage }}}} of its monthly budget",
              f"Month-to-date spend of {b} {who} is {{{{ $value | humanizePercentage }}}} of its "
              "monthly budget in {{ $labels.currency }} (alert at 50%)."),
        alert("InfermeterSpendBudget80", f"{used} >= 0.8", params.budget_for, "warning",
              f"{who} has spent {{{{ $value | humanizePercentage }}}} of its monthly budget",
              f"Month-to-date spend of {b} {who} is {{{{ $value | humanizePercentage }}}} of its "
              "monthly budget in {{ $labels.currency }} (alert at 80%)."),
        alert("InfermeterSpendBudgetForecast", f"{forecast} > 1 and on ({b}, currency) {used} < 1",
              params.forecast_for, "warning",
              f"{who} will overspend its monthly budget at the current rate",
              f"At the spend rate of the last {params.forecast_window}, {b} {who} ends the month "
              "at {{ $value | humanizePercentage }} of its budget in {{ $labels.currency }}."),
    ]  # fmt: skip
