"""The availability SLO: error ratios over the SRE workbook's windows and burn-rate alerts.

An error is a request the service failed: an `error_type` in `availability_error_types`
(by default connect failures, timeouts, upstream 5xx, error events inside a 200 stream and
truncated streams) or a status in `availability_error_codes` (429: the server refused for
capacity). Not errors: `client_disconnect` (499, the client left), other 4xx (the client's
own request was bad) and `proxy_internal` (a measuring bug; the client got its bytes).
"""

from __future__ import annotations

from typing import Any

from infermeter.rules.params import Params

NM = "namespace, model"
#: (burn rate, long window, short window): the workbook's page and ticket pairs
PAGE = ((14.4, "1h", "5m"), (6.0, "6h", "30m"))
TICKET = ((1.0, "3d", "6h"),)
OBJECTIVE = "infermeter:availability_objective:ratio"


def ratio(window: str) -> str:
    return f"namespace_model:infermeter_availability_errors:ratio_rate{window}"


def windows() -> list[str]:
    found: list[str] = []
    for _, long, short in (*PAGE, *TICKET):
        for w in (short, long):
            if w not in found:
                found.append(w)
    return found


def error_budget(params: Params) -> float:
    return round(1 - params.availability_objective, 12)


def _errors(params: Params, w: str) -> str:
    types, codes = params.availability_error_types, params.availability_error_codes
    parts = [f'rate(infermeter_request_errors_total{{error_type=~"{types}"}}[{w}])']
    if codes:
        parts.append(f'rate(infermeter_requests_total{{code=~"{codes}"}}[{w}])')
    parts.append(f"0 * rate(infermeter_requests_total[{w}])")  # a zero where nothing failed
    # `or`: error and code series never collide
    return f"sum by ({params.by(NM)}) ({' or '.join(parts)})"


def recording(params: Params) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {
            "record": ratio(w),
            "expr": f"{_errors(params, w)} / sum by ({params.by(NM)}) "
            f"(rate(infermeter_requests_total[{w}])) >= 0",
        }
        for w in windows()
    ]
    win = params.availability_window
    rules += [
        {"record": OBJECTIVE, "expr": f"vector({params.availability_objective})"},
        # the mean of the 5 m ratio over the SLO window: cheap, weights busy and quiet periods
        # alike, and ignores idle ones (the 5 m ratio is absent there)
        {"record": ratio(win), "expr": f"avg_over_time({ratio('5m')}[{win}])"},
        {"record": f"namespace_model:infermeter_availability_error_budget:remaining_{win}",
         "expr": f"1 - {ratio(win)} / {error_budget(params)}"},
        {"record": "namespace_model:infermeter_availability_burn_rate:ratio_rate1h",
         "expr": f"{ratio('1h')} / {error_budget(params)}"},
    ]  # fmt: skip
    return [{"name": "infermeter.availability", "rules": rules}]


def _burn(pairs: tuple[tuple[float, str, str], ...], budget: float) -> str:
    return " or ".join(
        f"({ratio(long)} / {budget} > {rate:g} and {ratio(short)} / {budget} > {rate:g})"
        for rate, long, short in pairs
    )


def alerts(params: Params, alert: Any) -> list[dict[str, Any]]:
    """Page on a fast burn, ticket on a slow one; `alert` builds one rule."""
    budget = error_budget(params)
    objective = f"{params.availability_objective * 100:g}%"
    what = (
        "{{ $labels.model }} in {{ $labels.namespace }} burns its error budget "
        '{{ $value | printf "%.1f" }}x as fast as the objective allows'
    )
    return [
        alert("InfermeterAvailabilityBurnRatePage", _burn(PAGE, budget), params.burn_page_for,
              "critical",
              "{{ $labels.model }} burns its error budget fast",
              f"{what} ({objective} over {params.availability_window}; pages at 14.4x over 1h "
              "and 5m or 6x over 6h and 30m): the budget is gone within days."),
        alert("InfermeterAvailabilityBurnRateTicket", _burn(TICKET, budget),
              params.burn_ticket_for, "warning",
              "{{ $labels.model }} burns its error budget",
              f"{what} ({objective} over {params.availability_window}) over 3d and 6h: at this "
              "rate the budget runs out before the window ends."),
    ]  # fmt: skip
