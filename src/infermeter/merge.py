"""The supervisor's view of every worker's accumulators: exact sums, bucket-wise histograms.

Each worker (a *source*) hands over cumulative values of the series it touched; the merger
keeps the latest per source and series. When a worker dies, its counters and histograms
are folded into `retired` (so the sums never go backwards when a fresh worker starts from
zero) and its gauges are dropped (its in-flight requests died with it). Pure: no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from infermeter.accumulators import Exemplar, FamilyDecl, Item, Labels, Payload

SeriesKey = tuple[str, Labels]


def add_payload(kind: str, into: Payload | None, more: Payload) -> Payload:
    """`into` + `more` for one series: counts and sums add, the newer exemplar wins."""
    if into is None:
        return _copy(kind, more)
    if kind != "histogram":
        return into + more
    counts, total, exemplars = into
    more_counts, more_total, more_exemplars = more
    merged = [a + b for a, b in zip(counts, more_counts, strict=True)]
    return [merged, total + more_total, _newer(exemplars, more_exemplars)]


def _copy(kind: str, payload: Payload) -> Payload:
    if kind != "histogram":
        return payload
    counts, total, exemplars = payload
    return [list(counts), total, None if exemplars is None else list(exemplars)]


def _newer(
    ours: list[Exemplar | None] | None, theirs: list[Exemplar | None] | None
) -> list[Exemplar | None] | None:
    if theirs is None:
        return None if ours is None else list(ours)
    if ours is None:
        return list(theirs)
    out: list[Exemplar | None] = []
    for a, b in zip(ours, theirs, strict=True):
        if a is None:
            out.append(b)
        elif b is None:
            out.append(a)
        else:
            out.append(a if a[2] >= b[2] else b)
    return out


class Merger:
    def __init__(self) -> None:
        #: Held by whoever changes or reads the merger when a render thread is about (the
        #: supervisor: hand-overs on its loop, renders on the render thread).
        self.lock = threading.Lock()
        self.families: dict[str, FamilyDecl] = {}
        #: Label values of each family in order of first appearance (the exposition's order).
        self.series: dict[str, dict[Labels, None]] = {}
        self._sources: dict[int, dict[SeriesKey, Payload]] = {}
        self._retired: dict[SeriesKey, Payload] = {}
        #: Merged payloads of series no source has changed since they were merged: a scrape
        #: re-merges only what changed (with many workers, merging is most of a render).
        self._merged: dict[SeriesKey, Payload | None] = {}

    def declare(self, decls: Iterable[FamilyDecl]) -> None:
        for decl in decls:
            if decl.name not in self.families:
                self.families[decl.name] = decl
                self.series[decl.name] = {}

    def update(self, source: int, items: Iterable[Item]) -> None:
        state = self._sources.setdefault(source, {})
        for name, labels, payload in items:
            known = self.series.get(name)
            if known is None:  # a family not declared: ignore rather than guess its type
                continue
            labels = tuple(labels)
            known[labels] = None
            key = (name, labels)
            state[key] = payload
            self._merged.pop(key, None)

    def retire(self, source: int) -> None:
        """The source is gone: keep what its counters and histograms carried, drop gauges."""
        state = self._sources.pop(source, {})
        for key, payload in state.items():
            self._merged.pop(key, None)
            kind = self.families[key[0]].kind
            if kind == "gauge":
                continue
            self._retired[key] = add_payload(kind, self._retired.get(key), payload)

    def sources(self) -> list[int]:
        return list(self._sources)

    def value(self, name: str, labels: Labels) -> Payload | None:
        """The merged payload of one series (None: no source has it)."""
        key = (name, labels)
        if key in self._merged:
            return self._merged[key]
        found = self._merge(name, key)
        if len(self._sources) > 1 or key in self._retired:
            self._merged[key] = found  # a lone source's payload is its own: nothing to save
        return found

    def _merge(self, name: str, key: SeriesKey) -> Payload | None:
        kind = self.families[name].kind
        found: Payload | None = None if kind == "gauge" else self._retired.get(key)
        for state in self._sources.values():
            payload = state.get(key)
            if payload is not None:
                # add_payload never changes its arguments: no copy of a single source.
                found = payload if found is None else add_payload(kind, found, payload)
        return found

    def merged(self, name: str) -> Iterator[tuple[Labels, Payload | None]]:
        """Every series of a family, in order, with its merged payload."""
        for labels in self.series[name]:
            yield labels, self.value(name, labels)
