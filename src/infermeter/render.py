"""A fast renderer of the merged accumulators: Prometheus text 0.0.4 and OpenMetrics 1.0.

prometheus_client formats every sample from scratch (label sorting, escaping, float
formatting); with 64 models that is ~14,500 lines and hundreds of milliseconds. Here each
series' line prefixes (name, sorted and escaped labels, `le`) are built once and cached, so
a scrape formats numbers only. The output matches prometheus_client's byte for byte (tests
render both for the same state). The supervisor's collectors (GPU, processes) keep yielding
prometheus_client families, rendered by prometheus_client itself: they are few samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.utils import floatToGoString as _go_string

from infermeter.accumulators import Exemplar, FamilyDecl, Labels
from infermeter.merge import Merger

EOF = "# EOF\n"
floatToGoString = cast(Callable[[float], str], _go_string)
_om_latest = cast(Callable[[object], bytes], om_latest)


def fmt(value: float) -> str:
    """floatToGoString, with a shortcut for the common case (Go uses exponents >= 1e6)."""
    value = float(value)
    if -1e6 < value < 1e6:
        return repr(value)
    return floatToGoString(value)


def fmt_count(count: int) -> str:
    return f"{count}.0" if 0 <= count < 1_000_000 else floatToGoString(float(count))


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{escape_label(v)}"' for k, v in sorted(pairs))


def _braced(text: str) -> str:
    return "{" + text + "}" if text else ""


def exemplar_text(exemplar: Exemplar) -> str:
    labels, value, timestamp = exemplar
    return f" # {{{_label_text(labels.items())}}} {floatToGoString(value)} {timestamp}"


class _Prefixes:
    """The constant start of each line of one series: `name{labels} `."""

    __slots__ = ("buckets", "count", "plain", "sum")

    def __init__(self, decl: FamilyDecl, labels: Labels) -> None:
        pairs = list(zip(decl.labels, labels, strict=True))
        name = decl.name
        if decl.kind == "histogram":
            self.buckets = [
                f"{name}_bucket{{{_label_text([*pairs, ('le', floatToGoString(b))])}}} "
                for b in decl.buckets
            ]
            braced = _braced(_label_text(pairs))
            self.count = f"{name}_count{braced} "
            self.sum = f"{name}_sum{braced} "
            self.plain = ""
        else:
            self.buckets, self.count, self.sum = [], "", ""
            self.plain = f"{_sample_name(decl)}{_braced(_label_text(pairs))} "


def _sample_name(decl: FamilyDecl) -> str:
    if decl.kind == "counter":
        return decl.name if decl.name.endswith("_total") else decl.name + "_total"
    return decl.name


def _sample_names(decl: FamilyDecl) -> tuple[str, ...]:
    if decl.kind == "histogram":
        return (decl.name + "_bucket", decl.name + "_count", decl.name + "_sum")
    return (_sample_name(decl),)


def _header(decl: FamilyDecl, openmetrics: bool) -> str:
    if openmetrics:
        name = decl.name.removesuffix("_total") if decl.kind == "counter" else decl.name
        doc = escape_label(decl.help)
    else:
        name = _sample_name(decl)
        doc = decl.help.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {decl.kind}\n"


class Renderer:
    """Renders a Merger; keeps the per-series prefixes between scrapes."""

    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self._prefixes: dict[tuple[str, Labels], _Prefixes] = {}

    def _prefix(self, decl: FamilyDecl, labels: Labels) -> _Prefixes:
        key = (decl.name, labels)
        found = self._prefixes.get(key)
        if found is None:
            found = self._prefixes[key] = _Prefixes(decl, labels)
        return found

    def render(self, openmetrics: bool, names: frozenset[str] | None = None) -> str:
        out: list[str] = []
        for name, decl in self.merger.families.items():
            want = _sample_names(decl)
            if names is not None and not names.intersection(want):
                continue
            lines: list[str] = []
            if decl.kind == "histogram":
                self._histogram(decl, lines, openmetrics, names, want)
            else:
                for labels, payload in self.merger.merged(name):
                    value = 0.0 if payload is None else payload  # a dead worker's gauge
                    lines.append(self._prefix(decl, labels).plain + fmt(value) + "\n")
            if names is not None and not lines:
                continue
            out.append(_header(decl, openmetrics))
            out.extend(lines)
        return "".join(out)

    def _histogram(
        self,
        decl: FamilyDecl,
        lines: list[str],
        openmetrics: bool,
        names: frozenset[str] | None,
        want: tuple[str, ...],
    ) -> None:
        buckets = names is None or want[0] in names
        count = names is None or want[1] in names
        total = names is None or want[2] in names
        append = lines.append
        for labels, payload in self.merger.merged(decl.name):
            if payload is None:
                continue
            counts, sum_value, exemplars = payload
            prefixes = self._prefix(decl, labels)
            cumulative = 0
            if buckets:
                if openmetrics and exemplars is not None:
                    for prefix, n, exemplar in zip(
                        prefixes.buckets, counts, exemplars, strict=True
                    ):
                        cumulative += n
                        if exemplar is None:
                            append(prefix + fmt_count(cumulative) + "\n")
                        else:
                            append(prefix + fmt_count(cumulative) + exemplar_text(exemplar) + "\n")
                else:
                    for prefix, n in zip(prefixes.buckets, counts, strict=True):
                        cumulative += n
                        append(prefix + fmt_count(cumulative) + "\n")
            else:
                cumulative = sum(counts)
            if count:
                append(prefixes.count + fmt_count(cumulative) + "\n")
            if total:
                append(prefixes.sum + fmt(sum_value) + "\n")


def render_registry(
    registry: CollectorRegistry, openmetrics: bool, names: frozenset[str] | None = None
) -> str:
    """prometheus_client's own rendering of a registry, without OpenMetrics' `# EOF`."""
    source = registry if names is None else registry.restricted_registry(sorted(names))
    if openmetrics:
        return _om_latest(source).decode().removesuffix(EOF)
    return text_latest(source).decode()


def exposition(
    head: CollectorRegistry,
    renderer: Renderer,
    tail: CollectorRegistry | None,
    openmetrics: bool,
    names: frozenset[str] | None = None,
) -> bytes:
    """Collectors first, then the proxy's families, then the supervisor's own (as today)."""
    parts = [render_registry(head, openmetrics, names), renderer.render(openmetrics, names)]
    if tail is not None:
        parts.append(render_registry(tail, openmetrics, names))
    if openmetrics:
        parts.append(EOF)
    return "".join(parts).encode()
