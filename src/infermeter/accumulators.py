"""Plain per-series accumulators for the proxy's measurements, cheap to update and to hand over.

A proxy worker records every observation here instead of in prometheus_client objects: no
lock, no label hashing, one bisect and two additions per histogram observation. What changed
since the last hand-over is collected by `Store.take()` as plain tuples (cumulative values of
the touched series only), which the supervisor merges and renders. The API mirrors
prometheus_client (`labels()`, `inc()`, `observe()`) so the recorder reads the same.
"""

from __future__ import annotations

import marshal
import time
from bisect import bisect_left
from typing import Any, NamedTuple

from infermeter.metrics import Kind, MetricSpec

INF = float("inf")
Labels = tuple[str, ...]
#: An exemplar as handed over: (labels, observed value, unix time).
Exemplar = tuple[dict[str, str], float, float]
#: counter and gauge: the value; histogram: [per-bucket counts (not cumulative), sum,
#: latest exemplar per bucket or None].
Payload = Any
#: One touched series: (family name, label values, payload).
Item = tuple[str, Labels, Payload]


class FamilyDecl(NamedTuple):
    """What the supervisor needs to render a family it has never seen a series of."""

    name: str
    kind: Kind
    help: str
    labels: Labels
    buckets: tuple[float, ...]  # upper bounds, ending with +Inf; empty unless a histogram


class _Child:
    __slots__ = ("_dirty", "_family", "_sink", "labels")

    def __init__(self, family: str, labels: Labels, sink: list[_Child]) -> None:
        self._family = family
        self.labels = labels
        self._sink = sink
        self._dirty = False

    def _touch(self) -> None:
        self._dirty = True
        self._sink.append(self)

    def item(self) -> Item:
        self._dirty = False
        return (self._family, self.labels, self.payload())

    def payload(self) -> Payload:
        raise NotImplementedError


class CounterChild(_Child):
    __slots__ = ("value",)

    def __init__(self, family: str, labels: Labels, sink: list[_Child]) -> None:
        super().__init__(family, labels, sink)
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount
        if not self._dirty:
            self._touch()

    def payload(self) -> Payload:
        return self.value


class GaugeChild(CounterChild):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount
        if not self._dirty:
            self._touch()

    def set(self, value: float) -> None:
        self.value = float(value)
        if not self._dirty:
            self._touch()


class HistogramChild(_Child):
    __slots__ = ("_bounds", "counts", "exemplars", "sum")

    def __init__(
        self, family: str, labels: Labels, sink: list[_Child], bounds: tuple[float, ...]
    ) -> None:
        super().__init__(family, labels, sink)
        self._bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.exemplars: list[Exemplar | None] | None = None

    def observe(self, value: float, exemplar: dict[str, str] | None = None) -> None:
        """`le` is inclusive: a value equal to a bound falls in that bound's bucket."""
        index = bisect_left(self._bounds, value)
        self.counts[index] += 1
        self.sum += value
        if exemplar is not None:
            if self.exemplars is None:
                self.exemplars = [None] * len(self._bounds)
            self.exemplars[index] = (exemplar, value, time.time())
        if not self._dirty:
            self._touch()

    def payload(self) -> Payload:
        return [self.counts, self.sum, self.exemplars]  # live lists: see Store.take


class Family:
    """One metric's children by label values; without labels it is its own only child."""

    __slots__ = ("_children", "_only", "_sink", "decl")

    def __init__(self, decl: FamilyDecl, sink: list[_Child]) -> None:
        self.decl = decl
        self._sink = sink
        self._children: dict[Labels, Any] = {}
        self._only: Any = None
        if not decl.labels:  # shown at 0 from the start, as prometheus_client does
            self._only = self.labels()
            self._only._touch()

    def labels(self, *values: str) -> Any:
        found = self._children.get(values)
        if found is None:
            values = tuple(str(v) for v in values)  # plain str (not an enum): marshal-able
            if len(values) != len(self.decl.labels):
                raise ValueError(f"{self.decl.name}: expected labels {self.decl.labels}")
            name, kind = self.decl.name, self.decl.kind
            if kind == "histogram":
                found = HistogramChild(name, values, self._sink, self.decl.buckets)
            elif kind == "gauge":
                found = GaugeChild(name, values, self._sink)
            else:
                found = CounterChild(name, values, self._sink)
            self._children[values] = found
        return found

    # Unlabelled families act as their only child.
    def inc(self, amount: float = 1.0) -> None:
        self._only.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._only.dec(amount)

    def set(self, value: float) -> None:
        self._only.set(value)

    def observe(self, value: float, exemplar: dict[str, str] | None = None) -> None:
        self._only.observe(value, exemplar)


def declare(spec: MetricSpec, extra_labels: Labels = ()) -> FamilyDecl:
    buckets: tuple[float, ...] = ()
    if spec.kind == "histogram":
        buckets = tuple(float(b) for b in spec.buckets)
        if not buckets or buckets[-1] != INF:
            buckets = (*buckets, INF)
    return FamilyDecl(spec.name, spec.kind, spec.help, (*spec.labels, *extra_labels), buckets)


class Store:
    """All of one worker's families, in declaration order (the exposition's order)."""

    def __init__(self) -> None:
        self._dirty: list[_Child] = []
        self.families: dict[str, Family] = {}

    def live(self, spec: MetricSpec, extra_labels: Labels = ()) -> Family:
        """The family for `spec` (made once): the accumulator twin of `MetricSpec.live`."""
        found = self.families.get(spec.name)
        if found is None:
            found = self.families[spec.name] = Family(declare(spec, extra_labels), self._dirty)
        return found

    def declarations(self) -> list[FamilyDecl]:
        return [family.decl for family in self.families.values()]

    def take(self) -> list[Item]:
        """Cumulative values of the series touched since the last call, in touch order.

        Histogram payloads are the live lists, not copies (copying doubled the cost of a
        hand-over): encode the result before the next observation, as the worker does.
        """
        dirty, self._dirty[:] = list(self._dirty), []
        out = []
        for child in dirty:
            child._dirty = False
            out.append((child._family, child.labels, child.payload()))
        return out

    def take_copy(self) -> list[Item]:
        """`take`, detached from the live accumulators (for in-process readers)."""
        return marshal.loads(marshal.dumps(self.take()))  # type: ignore[no-any-return]

    def everything(self) -> list[Item]:
        """Every series (a fresh supervisor or a test wants the full state)."""
        self._dirty.clear()
        items = [
            child.item() for family in self.families.values() for child in family._children.values()
        ]
        return marshal.loads(marshal.dumps(items))  # type: ignore[no-any-return]
