"""Read a worker's accumulators the way a scrape would (merged, rendered, parsed)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from infermeter.accumulators import Store
from infermeter.merge import Merger
from infermeter.render import Renderer


class StoreView:
    """`get_sample_value` over a Store, like prometheus_client's registry method."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def text(self) -> str:
        merger = Merger()
        merger.declare(self.store.declarations())
        merger.update(0, self.store.everything())
        return Renderer(merger).render(openmetrics=False)

    def get_sample_value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                if sample.name == name and sample.labels == (labels or {}):
                    return float(sample.value)
        return None
