"""A small typed builder for Grafana dashboards: only what our three dashboards use.

Our own rather than grafana-foundation-sdk: about 300 lines we can read in one sitting, no
dependency pinned to a Grafana release, and the same objects feed the PNG preview (layout,
units, series styles), so the picture and the JSON cannot drift apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${datasource}"}
"""Every panel and query target points here: the `datasource` template variable."""

GRID_WIDTH = 24
SCHEMA_VERSION = 39  # Grafana 10.4/11; older versions migrate on load

PanelKind = Literal["timeseries", "heatmap", "stat", "gauge", "state-timeline", "table"]
Format = Literal["time_series", "heatmap", "table"]


@dataclass(frozen=True, slots=True)
class Target:
    """One PromQL query of a panel; `legend` is Grafana's legendFormat (`{{label}}`)."""

    expr: str
    legend: str = ""
    format: Format = "time_series"
    instant: bool = False


@dataclass(frozen=True, slots=True)
class SeriesStyle:
    """Looks for the series whose display name matches `pattern` (a regex)."""

    pattern: str
    dashed: bool = False
    color: str | None = None
    width: int | None = None
    fill: int | None = None


@dataclass(frozen=True, slots=True)
class Panel:
    """A panel answers one question, which its description states."""

    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]
    kind: PanelKind = "timeseries"
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    stack: bool = False
    fill: int = 0
    styles: tuple[SeriesStyle, ...] = ()
    thresholds: tuple[tuple[float | None, str], ...] = ((None, "green"),)
    mappings: tuple[tuple[str, str, str], ...] = ()  # (value, text, color)
    log_scale: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True)
class Variable:
    """A query variable; `query` is a `label_values(...)` over the variables before it."""

    name: str
    label: str
    query: str
    single: bool = False  # one value at a time, no "All" (the cluster)


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    rows: tuple[Row, ...]
    variables: tuple[Variable, ...]
    tags: tuple[str, ...] = ("infermeter",)
    refresh: str = "30s"
    time_from: str = "now-3h"


@dataclass(frozen=True, slots=True)
class Placed:
    """A panel and where the grid puts it (Grafana units: 24 columns, rows of ~30 px)."""

    panel: Panel | Row
    x: int
    y: int
    w: int
    h: int


def layout(dashboard: Dashboard) -> list[Placed]:
    """Rows one under another; inside a row, panels flow left to right and wrap at 24."""
    placed: list[Placed] = []
    y = 0
    for row in dashboard.rows:
        placed.append(Placed(row, 0, y, GRID_WIDTH, 1))
        y += 1
        x, line_height = 0, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            placed.append(Placed(panel, x, y, panel.width, panel.height))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return placed


def _ref_id(index: int) -> str:
    return chr(ord("A") + index)


def _target_json(target: Target, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": target.expr,
        "format": target.format,
        "legendFormat": target.legend or "__auto",
        "range": not target.instant,
        "instant": target.instant,
        "refId": _ref_id(index),
    }
    if target.format == "heatmap":
        out["interval"] = ""
    return out


def _override(style: SeriesStyle) -> dict[str, Any]:
    props: list[dict[str, Any]] = []
    if style.dashed:
        props.append({"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}})
    if style.color:
        props.append({"id": "color", "value": {"mode": "fixed", "fixedColor": style.color}})
    if style.width is not None:
        props.append({"id": "custom.lineWidth", "value": style.width})
    if style.fill is not None:
        props.append({"id": "custom.fillOpacity", "value": style.fill})
    return {"matcher": {"id": "byRegexp", "options": style.pattern}, "properties": props}


def _field_config(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": panel.unit,
        "color": {"mode": "palette-classic"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in panel.thresholds],
        },
    }
    if panel.min is not None:
        defaults["min"] = panel.min
    if panel.max is not None:
        defaults["max"] = panel.max
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.mappings:
        defaults["mappings"] = [
            {
                "type": "value",
                "options": {
                    value: {"text": text, "color": color, "index": i}
                    for i, (value, text, color) in enumerate(panel.mappings)
                },
            }
        ]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": panel.fill,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
            "scaleDistribution": {"type": "log", "log": 2}
            if panel.log_scale
            else {"type": "linear"},
        }
    elif panel.kind in ("stat", "gauge", "state-timeline"):
        defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": [_override(s) for s in panel.styles]}


def _options(panel: Panel) -> dict[str, Any]:
    if panel.kind == "timeseries":
        return {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    if panel.kind == "heatmap":
        return {
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "scale": "exponential",
                      "exponent": 0.5, "steps": 64, "fill": "dark-orange", "reverse": False},
            "yAxis": {"unit": panel.unit, "axisPlacement": "left"},
            "rowsFrame": {"layout": "auto"},
            "cellValues": {},
            "filterValues": {"le": 1e-9},
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "legend": {"show": True},
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
        }  # fmt: skip
    if panel.kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "gauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "auto",
            "showThresholdLabels": False,
            "showThresholdMarkers": True,
        }
    if panel.kind == "state-timeline":
        return {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.8,
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single"},
        }
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}


def _panel_json(placed: Placed, panel_id: int) -> dict[str, Any]:
    pos = {"h": placed.h, "w": placed.w, "x": placed.x, "y": placed.y}
    item = placed.panel
    if isinstance(item, Row):
        return {"type": "row", "title": item.title, "id": panel_id, "gridPos": pos,
                "collapsed": False, "panels": []}  # fmt: skip
    out: dict[str, Any] = {
        "type": item.kind,
        "title": item.title,
        "description": item.description,
        "id": panel_id,
        "gridPos": pos,
        "datasource": DATASOURCE,
        "fieldConfig": _field_config(item),
        "options": _options(item),
        "targets": [_target_json(t, i) for i, t in enumerate(item.targets)],
    }
    if item.kind == "table":
        out["transformations"] = [
            {"id": "labelsToFields", "options": {"mode": "columns"}},
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                              "__name__": True}}},
        ]  # fmt: skip
    return out


def _variable_json(variable: Variable) -> dict[str, Any]:
    out = {
        "type": "query",
        "name": variable.name,
        "label": variable.label,
        "datasource": DATASOURCE,
        "query": variable.query,
        "definition": variable.query,
        "refresh": 2,  # on time range change: new pods appear without a reload
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "sort": 1,
        "regex": "",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }
    if variable.single:  # no "All": Grafana selects the first value
        del out["allValue"]
        out |= {"includeAll": False, "multi": False, "current": {}}
    return out


def to_json(dashboard: Dashboard) -> dict[str, Any]:
    """The dashboard model Grafana imports (and provisions) as it is."""
    datasource = {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": True,
        "graphTooltip": 1,  # shared crosshair: latency and GPU panels line up in time
        "refresh": dashboard.refresh,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": dashboard.time_from, "to": "now"},
        "timezone": "browser",
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{
            "title": "infermeter", "type": "dashboards", "tags": ["infermeter"],
            "asDropdown": True, "includeVars": True, "keepTime": True}],
        "templating": {"list": [datasource, *(_variable_json(v) for v in dashboard.variables)]},
        "panels": [_panel_json(p, i + 1) for i, p in enumerate(layout(dashboard))],
    }  # fmt: skip


NAMESPACE = 'namespace=~"$namespace"'
"""In every selector the variables narrow (the catalogue's INF, NM, NP and NME)."""


def with_cluster(dashboard: Dashboard, label: str) -> Dashboard:
    """The dashboard for a Prometheus that sees several clusters (Thanos, Mimir, a central
    ruler, with rules from `infermeter rules --cluster-label`): a `cluster` variable before
    the others, one cluster at a time (as kubernetes-mixin's multi-cluster dashboards, so
    that pods and models of the same name in two clusters never fold into one line), and
    `label="$cluster"` in every selector the variables narrow. Series recorded across
    clusters (spend by team and feature, budgets, the objective) keep no selector."""
    matcher = f'{label}="$cluster"'

    def scoped(expr: str) -> str:
        expr = expr.replace(NAMESPACE, f"{matcher}, {NAMESPACE}")
        return re.sub(r"label_values\((\w+),", rf"label_values(\1{{{matcher}}},", expr)

    def panel(item: Panel) -> Panel:
        targets = tuple(replace(t, expr=scoped(t.expr)) for t in item.targets)
        return replace(item, targets=targets)

    cluster = Variable(
        "cluster", "Cluster", f"label_values(infermeter_build_info, {label})", single=True
    )
    return replace(
        dashboard,
        rows=tuple(replace(r, panels=tuple(panel(p) for p in r.panels)) for r in dashboard.rows),
        variables=(cluster, *(replace(v, query=scoped(v.query)) for v in dashboard.variables)),
    )


def render(dashboard: Dashboard) -> str:
    """Stable text: the checked-in file is compared byte for byte."""
    return json.dumps(to_json(dashboard), indent=2, ensure_ascii=False) + "\n"
