"""The one prometheus_client collector: runs each part, never raises, reports each part's health.

Parts are small objects with `name`, `collect()` and optionally `status()`; keeping the
collector_* self-metrics here avoids two parts emitting the same family twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from infermeter import metrics as m

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Status:
    ok: bool
    seconds: float | None


class Part(Protocol):
    name: str

    def collect(self) -> Iterable[Metric]: ...


class CollectorSet(Collector):
    def __init__(self, parts: Sequence[Part]) -> None:
        self._parts = parts

    def describe(self) -> Iterable[Metric]:
        return []  # never run the parts at registration time

    def collect(self) -> Iterable[Metric]:
        duration, success = m.COLLECTOR_DURATION.family(), m.COLLECTOR_SUCCESS.family()
        for part in self._parts:
            started = time.perf_counter()
            try:
                families = list(part.collect())
                ok = True
            except Exception:
                log.exception("collector failed", extra={"collector": part.name})
                families, ok = [], False
            status = Status(ok, time.perf_counter() - started)
            reported = getattr(part, "status", None)
            if ok and reported is not None:
                status = reported()
            yield from families
            if status.seconds is not None:
                duration.add_metric([part.name], status.seconds)
            success.add_metric([part.name], 1.0 if status.ok else 0.0)
        yield duration
        yield success
