"""Scrape-time view of the engine fetcher: fresh families from its last snapshot."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import Metric

from infermeter import metrics as m
from infermeter.collectors import Status
from infermeter.engine.fetcher import EngineFetcher

SPECS = {
    "requests_waiting": m.ENGINE_REQUESTS_WAITING,
    "requests_running": m.ENGINE_REQUESTS_RUNNING,
    "kv_cache_usage": m.ENGINE_KV_CACHE_USAGE,
    "prefix_cache_queries": m.ENGINE_PREFIX_CACHE_QUERIES,
    "prefix_cache_hits": m.ENGINE_PREFIX_CACHE_HITS,
    "preemptions": m.ENGINE_PREEMPTIONS,
}


class EngineCollector:
    name = "engine"

    def __init__(self, fetcher: EngineFetcher) -> None:
        self._fetcher = fetcher

    def status(self) -> Status:
        """The fetch, not this scrape-time copy, is the work worth reporting."""
        snap = self._fetcher.snapshot()
        return Status(ok=snap.fetch_ok, seconds=snap.fetch_seconds)

    def collect(self) -> Iterable[Metric]:
        snap = self._fetcher.snapshot()
        if snap.up is None:
            return
        up = m.ENGINE_UP.family()
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        if snap.engine:
            info = m.ENGINE_INFO.family()
            info.add_metric([snap.engine, snap.version], 1.0)
            yield info
        families: dict[str, m.Family] = {}
        for sample in snap.figures:
            family = families.get(sample.figure)
            if family is None:
                family = families[sample.figure] = SPECS[sample.figure].family()
            family.add_metric([sample.model, snap.engine], sample.value)
        yield from (families[name] for name in sorted(families))
