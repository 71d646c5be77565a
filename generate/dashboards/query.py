"""Run a panel's queries against a Prometheus, as Grafana would with "All" selected.

Shared by the preview renderer and the tests that prove every panel returns data, so both
substitute the template variables the same way. Standard library only (urllib): the
preview must not pull an HTTP client into the runtime dependencies.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from generate.dashboards.builder import Target

ALL = ".*"  # Grafana's allValue for our variables: "All" is a regex matching everything


def substitute(expr: str, rate_interval: str) -> str:
    """Template variables as Grafana expands them with every variable on All."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name in ("namespace", "model", "pod"):
        expr = expr.replace("${" + name + "}", ALL).replace("$" + name, ALL)
    return expr


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]


_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def legend(fmt: str, labels: dict[str, str]) -> str:
    """Grafana's legendFormat: `{{label}}` replaced by the label's value."""
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return labels.get("__name__", "") + ("{" + inner + "}" if inner else "")
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), fmt).strip()


class PrometheusError(RuntimeError):
    """Prometheus answered with an error (a bad query, a timeout)."""


class Prometheus:
    """The two query endpoints of the HTTP API, nothing more."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:  # 400/422: the query is wrong
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{params.get('query')}: {body.get('error')}")
        return body["data"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        data = self._get(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )
        return [
            Series(
                item["metric"],
                tuple(float(t) for t, _ in item["values"]),
                tuple(float(v) for _, v in item["values"]),
            )
            for item in data["result"]
        ]

    def query(self, expr: str, at: float) -> list[Series]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            t, v = data["result"]
            return [Series({}, (float(t),), (float(v),))]
        return [
            Series(item["metric"], (float(item["value"][0]),), (float(item["value"][1]),))
            for item in data["result"]
        ]


def run(
    prometheus: Prometheus,
    target: Target,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> list[Series]:
    """The target's result over [start, end] (instant targets: at `end`)."""
    expr = substitute(target.expr, rate_interval)
    if target.instant:
        return prometheus.query(expr, end)
    return prometheus.query_range(expr, start, end, step)


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def label_values(prometheus: Prometheus, query: str) -> list[str]:
    """A variable's `label_values(selector, label)` as Grafana resolves it, with All."""
    match = _LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"not a label_values() query: {query}")
    params = {}
    if match.group("selector"):
        params["match[]"] = substitute(match.group("selector"), "1m")
    values: list[str] = prometheus._get(f"/api/v1/label/{match.group('label')}/values", params)
    return sorted(values)
