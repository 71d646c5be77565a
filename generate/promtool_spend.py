"""promtool unit tests of the spend (budget, forecast) and availability (burn rate) rules."""

from __future__ import annotations

from typing import Any

from infermeter.rules.params import Params

RUNBOOK = Params().runbook_url
#: Monthly budgets the tests render into tests/budget-rules.yaml (USD).
BUDGETS = {"steep": 1000.0, "calm": 1000.0}


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _fired(
    name: str, labels: dict[str, str], severity: str, summary: str, description: str
) -> dict[str, Any]:
    annotations = {"summary": summary, "description": description}
    return {
        "exp_labels": {"severity": severity, **labels},
        "exp_annotations": {**annotations, "runbook_url": f"{RUNBOOK}#{name.lower()}"},
    }


def cost_test() -> dict[str, Any]:
    """Team steep spends 10 USD a minute against a 1,000 USD month: 50% after ~52 min, 80%
    after ~82 min, and a forecast far over budget from the start. Team calm spends 0.02 USD a
    minute (~900 USD a month, half of it estimated): never alerted."""
    base = {"namespace": "ns", "pod": "p", "model": "m", "api": "chat_completions",
            "currency": "USD", "feature": "f"}  # fmt: skip
    exact, estimated = "infermeter_cost_total", "infermeter_cost_estimated_total"
    series = [
        {"series": _labels(exact, {**base, "team": "steep"}), "values": "0+10x100"},
        {"series": _labels(exact, {**base, "team": "calm"}), "values": "0+0.01x100"},
        # estimated spend counts towards the budget too (here: none for steep, some for calm)
        {"series": _labels(estimated, {**base, "team": "calm"}), "values": "0+0.01x100"},
    ]
    team = {"team": "steep", "currency": "USD"}

    def budget(name: str, used: str, at: str) -> dict[str, Any]:
        return _fired(name, team, "warning",
                      f"steep has spent {used} of its monthly budget",
                      f"Month-to-date spend of team steep is {used} of its monthly budget in USD "
                      f"(alert at {at}).")  # fmt: skip

    forecast = _fired("InfermeterSpendBudgetForecast", team, "warning",
                      "steep will overspend its monthly budget at the current rate",
                      "At the spend rate of the last 6h, team steep ends the month at 8734% of its "
                      "budget in USD.")  # fmt: skip
    tests = [
        # below 50%: silent (48% at 50 min, and 50.8% since only 2 min < `for`)
        {"eval_time": "50m", "alertname": "InfermeterSpendBudget50", "exp_alerts": []},
        {"eval_time": "55m", "alertname": "InfermeterSpendBudget50", "exp_alerts": []},
        {"eval_time": "60m", "alertname": "InfermeterSpendBudget50",
         "exp_alerts": [budget("InfermeterSpendBudget50", "58%", "50%")]},
        {"eval_time": "60m", "alertname": "InfermeterSpendBudget80", "exp_alerts": []},
        {"eval_time": "84m", "alertname": "InfermeterSpendBudget80", "exp_alerts": []},
        {"eval_time": "90m", "alertname": "InfermeterSpendBudget80",
         "exp_alerts": [budget("InfermeterSpendBudget80", "88%", "80%")]},
        {"eval_time": "90m", "alertname": "InfermeterSpendBudget50", "exp_alerts": []},
        # the forecast: a steep month, long before 50%; not before `for` (1 h)
        {"eval_time": "45m", "alertname": "InfermeterSpendBudgetForecast", "exp_alerts": []},
        {"eval_time": "70m", "alertname": "InfermeterSpendBudgetForecast",
         "exp_alerts": [forecast]},
    ]  # fmt: skip
    return {"interval": "1m", "input_series": series, "alert_rule_test": tests}


def availability_test() -> dict[str, Any]:
    """Objective 99.9%: fast burns page, a slow burn opens a ticket, a steady error rate
    inside the budget and the clients' own errors (499, 400) stay silent."""
    base = {"namespace": "ns", "pod": "p", "api": "chat_completions"}

    def requests(model: str, code: str, values: str) -> dict[str, str]:
        labels = {**base, "model": model, "code": code}
        return {"series": _labels("infermeter_requests_total", labels), "values": values}

    def errors(model: str, error_type: str, values: str) -> dict[str, str]:
        labels = {**base, "model": model, "error_type": error_type}
        return {"series": _labels("infermeter_request_errors_total", labels), "values": values}

    series = [
        # fast: fine for 60 min, then 20% of requests fail with upstream 5xx
        requests("fast", "200", "0+100x60 6080+80x70"),
        requests("fast", "502", "0x60 20+20x70"),
        errors("fast", "upstream_http_5xx", "0x60 20+20x70"),
        # throttled: 10% of requests get 429 from the upstream (counted: capacity)
        requests("throttled", "200", "0+90x130"),
        requests("throttled", "429", "0+10x130"),
        errors("throttled", "upstream_http_4xx", "0+10x130"),
        # slow: 0.2% truncated streams, steadily: 2x the budget's pace
        requests("slow", "200", "0+1000x130"),
        errors("slow", "stream_truncated", "0+2x130"),
        # steady: 0.05% errors, steadily: half the budget's pace, inside the objective
        requests("steady", "200", "0+1000x130"),
        errors("steady", "upstream_timeout", "0+0.5x130"),
        # clients: half the requests are the clients' doing (gone: 499, bad request: 400)
        requests("clients", "200", "0+50x130"),
        requests("clients", "499", "0+25x130"),
        requests("clients", "400", "0+25x130"),
        errors("clients", "client_disconnect", "0+25x130"),
        errors("clients", "upstream_http_4xx", "0+25x130"),
    ]

    def fired(kind: str, model: str, burn: str) -> dict[str, Any]:
        page = kind == "Page"
        windows = (
            "(99.9% over 30d; pages at 14.4x over 1h and 5m or 6x over 6h and 30m): the budget "
            "is gone within days."
            if page
            else "(99.9% over 30d) over 3d and 6h: at this rate the budget runs out before the "
            "window ends."
        )
        return _fired(
            f"InfermeterAvailabilityBurnRate{kind}",
            {"namespace": "ns", "model": model},
            "critical" if page else "warning",
            f"{model} burns its error budget" + (" fast" if page else ""),
            f"{model} in ns burns its error budget {burn}x as fast as the objective allows "
            + windows,
        )

    def page(model: str, burn: str) -> dict[str, Any]:
        return fired("Page", model, burn)

    def ticket(model: str, burn: str) -> dict[str, Any]:
        return fired("Ticket", model, burn)

    tests = [
        {"eval_time": "60m", "alertname": "InfermeterAvailabilityBurnRatePage",
         "exp_alerts": [page("throttled", "100.0")]},
        {"eval_time": "80m", "alertname": "InfermeterAvailabilityBurnRatePage",
         "exp_alerts": [page("fast", "66.7"), page("throttled", "100.0")]},
        # the slow burn never pages, the ticket catches it (fast and throttled, too)
        {"eval_time": "125m", "alertname": "InfermeterAvailabilityBurnRatePage",
         "exp_alerts": [page("fast", "200.0"), page("throttled", "100.0")]},
        {"eval_time": "125m", "alertname": "InfermeterAvailabilityBurnRateTicket",
         "exp_alerts": [ticket("fast", "104.0"), ticket("slow", "2.0"),
                        ticket("throttled", "100.0")]},
    ]  # fmt: skip
    return {"interval": "1m", "input_series": series, "alert_rule_test": tests}


#: The month-to-date chain over a whole month, cheaply: hourly samples and evaluations, the
#: chain's group every hour (in production: every minute, with a 5 m rate).
MONTH_PARAMS = Params(rate_window="2h", month_to_date_interval="1h")


def month_rule_groups() -> list[dict[str, Any]]:
    from infermeter.rules.cost import recording

    return recording(MONTH_PARAMS)


def month_to_date_test_file(rule_file: str) -> dict[str, Any]:
    """60 USD an hour from 1970-01-01 00:00 UTC (promtool's time 0) into February: the
    month-to-date total grows all January and starts again on February 1st. The chain adds
    rate x 3600 each hour: 30 at 1h (the 2h rate window is half empty), then 60 an hour."""
    labels = {"namespace": "ns", "pod": "p", "model": "m", "api": "chat_completions",
              "currency": "USD", "team": "a", "feature": "f"}  # fmt: skip
    mtd = "team_currency:infermeter_spend:month_to_date"

    def at(hours: int, value: float) -> dict[str, Any]:
        sample = {"labels": mtd + '{currency="USD", team="a"}', "value": value}
        return {"expr": mtd, "eval_time": f"{hours}h", "exp_samples": [sample]}

    return {
        "rule_files": [rule_file],
        "evaluation_interval": "1h",
        "group_eval_order": [group["name"] for group in month_rule_groups()],
        "tests": [
            {
                "interval": "1h",
                "input_series": [
                    {"series": _labels("infermeter_cost_total", labels), "values": "0+60x760"}
                ],
                "promql_expr_test": [
                    at(24, 30 + 60 * 23),  # January 2nd, 00:00
                    at(743, 30 + 60 * 742),  # January 31st, 23:00: the month's total
                    at(744, 60),  # February 1st, 00:00: a new month
                    at(750, 60 * 7),
                ],
            }
        ],
    }
