"""Draw each dashboard to one PNG from a live Prometheus: a picture for people without Grafana.

`python -m generate.dashboards.preview --prometheus URL --out docs/images/` runs every
panel's queries (variables on "All") over the last `--minutes` and draws the panels where the
dashboard's grid puts them, in Grafana's dark colours. It is a preview, not a renderer:
timeseries, heatmaps, stats, state timelines and tables, with units, legends and the
dashed/coloured series the dashboard declares. A build-time tool of the
repository (not in the wheel); needs matplotlib (`pip install -e '.[preview]'` in a checkout).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; before pyplot is imported

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from generate.dashboards.builder import GRID_WIDTH, Dashboard, Panel, Row, layout
from generate.dashboards.catalogue import DASHBOARDS
from generate.dashboards.query import Prometheus, PrometheusError, Series, legend, run

BACKGROUND, PANEL, TEXT, MUTED, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
PALETTE = (
    "#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#37872D",
    "#FADE2A", "#C4162A", "#1F60C4", "#8F3BB8", "#FF9830", "#96D98D",
)  # fmt: skip  # Grafana's classic palette
NAMED = {"red": "#F2495C", "blue": "#5794F2", "green": "#73BF69", "orange": "#FF9830"}
INCH_PER_COLUMN = 0.9
INCH_PER_GRID_ROW = 0.36  # a Grafana grid unit is 30 px tall, a column ~1/24 of the screen
MAX_LEGEND = 10
LEGEND_COLUMNS = {8: 2, 12: 3, 18: 4, 24: 5}


# --- units ---------------------------------------------------------------------------------
Steps = Sequence[tuple[float, str]]


def _si(value: float, unit: str, steps: Steps) -> str:
    for factor, prefix in steps:
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}".rstrip()
    factor, prefix = steps[-1]
    return f"{value / factor:.3g} {prefix}{unit}".rstrip()


_SI = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


def format_value(value: float, unit: str) -> str:
    """The value as Grafana would print it for the panel's unit (close enough to read)."""
    if math.isnan(value):
        return "-"
    if value == 0 and unit not in ("percentunit",):
        suffix = {
            "s": "s",
            "bytes": "B",
            "reqps": "req/s",
            "celsius": "°C",
            "watt": "W",
            "hertz": "Hz",
            "joule": "J",
        }.get(unit, unit.removeprefix("suffix:").strip())
        return f"0 {suffix}".strip() if unit not in ("short", "none") else "0"
    if unit.startswith("suffix:"):
        return _si(value, "", _SI) + unit.removeprefix("suffix:")
    if unit == "s":
        for factor, name in ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms")):
            if abs(value) >= factor:
                return f"{value / factor:.3g} {name}"
        return f"{value * 1e6:.3g} µs" if value else "0 s"
    if unit == "percentunit":
        return f"{100 * value:.3g}%"
    if unit == "bytes":
        iec: Steps = ((1024.0**4, "Ti"), (1024.0**3, "Gi"), (1024.0**2, "Mi"), (1024.0, "Ki"))
        return _si(value, "B", (*iec, (1.0, "")))
    if unit == "reqps":
        return _si(value, "req/s", _SI) if value >= 1 or value == 0 else f"{value:.2g} req/s"
    if unit == "celsius":
        return f"{value:.3g} °C"
    if unit in ("watt", "hertz", "joule"):
        symbol = {"watt": "W", "hertz": "Hz", "joule": "J"}[unit]
        return _si(value, symbol, (*_SI, (1e-3, "m")))
    if abs(value) >= 1000:
        return _si(value, "", _SI)
    return f"{value:.3g}"


def _formatter(unit: str) -> FuncFormatter:
    return FuncFormatter(lambda value, _pos: format_value(value, unit))


# --- queries -------------------------------------------------------------------------------
Drawn = list[tuple[str, Series]]


def _results(
    prometheus: Prometheus, panel: Panel, start: float, end: float, step: float, rate: str
) -> Drawn:
    out: Drawn = []
    for target in panel.targets:
        try:
            found = run(prometheus, target, start, end, step, rate)
        except PrometheusError as exc:
            print(f"{panel.title}: {exc}", file=sys.stderr)
            continue
        out += [(legend(target.legend, s.labels), s) for s in found]
    return out


def _style(panel: Panel, name: str, index: int) -> dict[str, object]:
    """Line properties: the palette, then every matching SeriesStyle in order (last wins)."""
    props: dict[str, object] = {"color": PALETTE[index % len(PALETTE)], "linewidth": 1.4}
    for style in panel.styles:
        if re.search(style.pattern, name):
            if style.dashed:
                props["linestyle"] = (0, (4, 3))
            if style.color:
                props["color"] = NAMED.get(style.color, style.color)
            if style.width is not None:
                props["linewidth"] = style.width
    return props


# --- panel kinds ---------------------------------------------------------------------------
def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "No data", ha="center", va="center", color=MUTED, fontsize=11,
            transform=ax.transAxes)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _time_axis(ax: Axes) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.grid(True, color=GRID, linewidth=0.6)
    ax.tick_params(colors=MUTED, labelsize=8.5)


def _dates(times: Sequence[float]) -> list[float]:
    """Matplotlib date numbers (days since the Unix epoch, matplotlib's default epoch)."""
    return [t / 86400.0 for t in times]


def _timeseries(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    drawn = sorted(drawn, key=lambda item: item[0])
    if panel.stack:
        grid = sorted({t for _, s in drawn for t in s.times})
        layers = [[dict(zip(s.times, s.values, strict=True)).get(t, 0.0) for t in grid]
                  for _, s in drawn]  # fmt: skip
        colors = [str(_style(panel, name, i)["color"]) for i, (name, _) in enumerate(drawn)]
        ax.stackplot(_dates(grid), layers, labels=[n for n, _ in drawn], colors=colors,
                     alpha=0.55, linewidth=0.8)  # fmt: skip
    else:
        for i, (name, series) in enumerate(drawn):
            ax.plot(_dates(series.times), series.values, label=name, **_style(panel, name, i))  # type: ignore[arg-type]
    if panel.log_scale:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_locator(LogLocator(numticks=5))
    elif panel.min is not None:
        ax.set_ylim(bottom=panel.min)
    if panel.max is not None and not panel.log_scale:
        ax.set_ylim(top=panel.max * 1.02)
    ax.yaxis.set_major_formatter(_formatter(panel.unit))
    if not panel.log_scale:
        ax.yaxis.set_major_locator(MaxNLocator(4))
    _time_axis(ax)


def _bound(le: str) -> float:
    return math.inf if le == "+Inf" else float(le)


def _heatmap(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    buckets = sorted(drawn, key=lambda item: _bound(item[1].labels.get("le", "+Inf")))
    grid = sorted({t for _, s in buckets for t in s.times})
    cumulative = [[dict(zip(s.times, s.values, strict=True)).get(t, 0.0) for t in grid]
                  for _, s in buckets]  # fmt: skip
    counts = [
        [max(0.0, row[j] - (cumulative[i - 1][j] if i else 0.0)) for j in range(len(grid))]
        for i, row in enumerate(cumulative)
    ]  # Grafana de-accumulates "heatmap" format the same way
    used = [i for i, row in enumerate(counts) if any(v > 0 for v in row)]
    if not used:
        _no_data(ax)
        return
    lo, hi = max(0, used[0] - 1), min(len(counts) - 1, used[-1] + 1)
    rows = [[v if v > 0 else math.nan for v in row] for row in counts[lo : hi + 1]]
    labels = [buckets[i][1].labels.get("le", "") for i in range(lo, hi + 1)]
    x = _dates(grid)
    edges = [*x, x[-1] + (x[-1] - x[-2] if len(x) > 1 else 1 / 86400)]
    cmap = matplotlib.colormaps["Oranges"].with_extremes(bad=PANEL)  # empty cells: background
    mesh = ax.pcolormesh(edges, range(len(rows) + 1), rows, cmap=cmap,
                         norm=PowerNorm(0.5, vmin=0), shading="flat")  # fmt: skip
    if len(grid) <= 60:  # cell gaps as in Grafana, unless they would hide thin cells
        mesh.set_edgecolor(PANEL)
    tick_every = max(1, len(labels) // 6)
    ax.set_yticks([i + 0.5 for i in range(0, len(labels), tick_every)])
    ax.set_yticklabels(
        [
            "+Inf" if label == "+Inf" else format_value(_bound(label), panel.unit)
            for label in labels[::tick_every]
        ]
    )
    _time_axis(ax)
    ax.grid(False)


def _threshold_color(panel: Panel, value: float) -> str:
    color = "green"
    for bound, name in panel.thresholds:
        if bound is None or value >= bound:
            color = name
    return NAMED.get(color, color)


def _stat(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for i, (_name, series) in enumerate(drawn[:4]):
        values = [v for v in series.values if not math.isnan(v)]
        if not values:
            continue
        last = values[-1]
        color = _threshold_color(panel, last)
        x = (i + 0.5) / len(drawn[:4])
        if len(series.values) > 1:
            spark = ax.inset_axes((i / len(drawn[:4]), 0.0, 1 / len(drawn[:4]), 0.45))
            spark.fill_between(range(len(series.values)), series.values, color=color, alpha=0.18)
            spark.plot(series.values, color=color, linewidth=1)
            spark.set_axis_off()
        ax.text(x, 0.5, format_value(last, panel.unit), ha="center", va="center",
                fontsize=20, color=color, fontweight="bold", transform=ax.transAxes)  # fmt: skip


def _state_timeline(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    drawn = sorted(drawn, key=lambda item: item[0])[:MAX_LEGEND]
    colors = {value: NAMED.get(color, color) for value, _, color in panel.mappings}
    for row, (_name, series) in enumerate(drawn):
        y = len(drawn) - 1 - row
        times = _dates(series.times)
        step = (times[1] - times[0]) if len(times) > 1 else 1 / 86400
        for t, v in zip(times, series.values, strict=True):
            if math.isnan(v):
                continue
            ax.barh(y, step, left=t, height=0.8, color=colors.get(f"{v:g}", NAMED["orange"]),
                    linewidth=0)  # fmt: skip
    ax.set_yticks(range(len(drawn)))
    ax.set_yticklabels([name for name, _ in reversed(drawn)], fontsize=7, color=TEXT)
    ax.set_ylim(-0.6, len(drawn) - 0.4)
    _time_axis(ax)
    ax.grid(False)
    legend_text = "   ".join(f"{text}: {value}" for value, text, _ in panel.mappings)
    ax.set_xlabel(legend_text, color=MUTED, fontsize=7)


def _table(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    header = ("alertname", "alertstate", "severity", "pod", "gpu", "xid", "model")
    rows = sorted({tuple(s.labels.get(column, "") for column in header) for _, s in drawn}, key=str)
    lines = [header, *rows[:8]]
    widths = (0.26, 0.1, 0.1, 0.18, 0.06, 0.06, 0.24)
    for i, line in enumerate(lines):
        x = 0.01
        for width, cell in zip(widths, line, strict=True):
            color = TEXT if i else MUTED
            if i and cell == "firing":
                color = NAMED["red"]
            ax.text(x, 0.92 - i * 0.11, cell, transform=ax.transAxes, fontsize=8.5, color=color,
                    va="top", fontweight="bold" if i == 0 else "normal")  # fmt: skip
            x += width


def _draw_panel(ax: Axes, panel: Panel, drawn: Drawn) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    if not drawn:
        _no_data(ax)
    elif panel.kind == "timeseries":
        _timeseries(ax, panel, drawn)
    elif panel.kind == "heatmap":
        _heatmap(ax, panel, drawn)
    elif panel.kind in ("stat", "gauge"):  # a gauge is drawn as its number
        _stat(ax, panel, drawn)
    elif panel.kind == "state-timeline":
        _state_timeline(ax, panel, drawn)
    else:
        _table(ax, panel, drawn)


# --- the page ------------------------------------------------------------------------------
def draw(
    dashboard: Dashboard,
    prometheus: Prometheus,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> Figure:
    """One figure, panels placed by the dashboard's grid."""
    placed = layout(dashboard)
    title_rows = 2
    height_units = max(p.y + p.h for p in placed) + title_rows
    fig = plt.figure(
        figsize=(GRID_WIDTH * INCH_PER_COLUMN, height_units * INCH_PER_GRID_ROW),
        facecolor=BACKGROUND,
    )
    span = f"{time.strftime('%H:%M:%S', time.gmtime(start))} - "
    span += f"{time.strftime('%H:%M:%S UTC', time.gmtime(end))}"
    fig.text(0.006, 1 - 0.9 / height_units, f"{dashboard.title}", fontsize=17, color=TEXT,
             fontweight="bold", va="center")  # fmt: skip
    fig.text(0.994, 1 - 0.9 / height_units,
             f"preview: all namespaces, models and pods · {span} · rate interval {rate_interval}",
             fontsize=9, color=MUTED, va="center", ha="right")  # fmt: skip
    unit_w, unit_h = 1 / GRID_WIDTH, 1 / height_units
    for item in placed:
        top = 1 - (item.y + title_rows) * unit_h
        if isinstance(item.panel, Row):
            fig.text(0.006, top - 0.5 * unit_h, item.panel.title, fontsize=12, color=TEXT,
                     fontweight="bold", va="center")  # fmt: skip
            continue
        panel = item.panel
        left, width = item.x * unit_w, item.w * unit_w
        height = item.h * unit_h
        frame = fig.add_axes((left + 0.002, top - height + 0.004, width - 0.004, height - 0.008))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(GRID)
        frame.text(0.012, 1 - 0.45 / item.h, panel.title, transform=frame.transAxes,
                   fontsize=10, color=TEXT, fontweight="bold", va="center")  # fmt: skip
        drawn = _results(prometheus, panel, start, end, step, rate_interval)
        columns = LEGEND_COLUMNS.get(item.w, 3)
        legend_rows = math.ceil(min(len(drawn), MAX_LEGEND) / columns)
        legend_rows = legend_rows if panel.kind == "timeseries" else 0
        bottom_pad = (1.0 + 0.42 * legend_rows) / item.h
        left_pad = (0.30 if panel.kind == "state-timeline" else 0.065) * 12 / item.w
        if panel.kind in ("stat", "gauge", "table"):
            left_pad = 0.01
            bottom_pad = 0.04
        inner = frame.inset_axes(
            (left_pad, bottom_pad, 1 - left_pad - 0.015, 1 - bottom_pad - 1.25 / item.h)
        )
        _draw_panel(inner, panel, drawn)
        if drawn and panel.kind in ("timeseries", "heatmap", "state-timeline"):
            inner.set_xlim(start / 86400.0, end / 86400.0)  # every panel on the same time axis
        handles, labels = inner.get_legend_handles_labels()
        if handles:
            order = sorted(range(len(labels)), key=lambda i: labels[i])[:MAX_LEGEND]
            frame.legend([handles[i] for i in order], [labels[i] for i in order],
                         loc="lower left", bbox_to_anchor=(0.004, 0.0), ncol=columns,
                         fontsize=8, frameon=False, labelcolor=TEXT, handlelength=2.2,
                         columnspacing=1.2, borderaxespad=0.25)  # fmt: skip
    return fig


def render_all(
    url: str,
    out: Path,
    *,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> list[Path]:
    """One PNG per dashboard, named like its JSON file."""
    prometheus = Prometheus(url)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, dashboard in DASHBOARDS.items():
        fig = draw(dashboard, prometheus, start, end, step, rate_interval)
        path = out / (Path(name).stem + ".png")
        fig.savefig(path, dpi=90, facecolor=BACKGROUND)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generate.dashboards.preview")
    parser.add_argument("--prometheus", required=True, help="Base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--minutes", type=float, default=60.0, help="Time range drawn.")
    parser.add_argument("--step", type=float, default=0.0, help="Seconds; 0: 200 points.")
    parser.add_argument(
        "--rate-interval", default="1m", help="Value of $__rate_interval (Grafana: 4 scrapes)."
    )
    args = parser.parse_args(argv)
    end = time.time()
    start = end - args.minutes * 60
    step = args.step or max(1.0, (end - start) / 200)
    for path in render_all(
        args.prometheus, args.out, start=start, end=end, step=step, rate_interval=args.rate_interval
    ):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
