"""Turns finished request records into observations, cheaply and boundedly.

Observations go to plain accumulators (`infermeter.accumulators`) that the worker hands to
the supervisor; children of each labelled metric are looked up once per (model, api) and
cached, so the hot path does no label hashing beyond one dict lookup per request. The
`model` label is capped for the whole sidecar by the shared `ModelSlots`: after
`max_models` distinct values, new ones are recorded as `_other`.
"""

from __future__ import annotations

from typing import Any

from infermeter import metrics as m
from infermeter.accumulators import Store
from infermeter.proxy.model_slots import ModelSlots
from infermeter.streams.timing import SLO, RequestRecord, is_good

OTHER_MODEL = "_other"
UNKNOWN_MODEL = "unknown"
MAX_MODEL_LENGTH = 200


def label_model(slots: ModelSlots, model: str) -> str:
    """The label of a (non-empty) model name: its own while slots last, then _other."""
    model = model[:MAX_MODEL_LENGTH]
    return model if slots.claim(model) else OTHER_MODEL


class Series:
    """The children of the inference metrics for one (model, api), made on first use.

    Lazily: a path that never streams (api="other" GETs, say) gets no empty TTFT or ITL
    histograms, which would cost dozens of series each.
    """

    __slots__ = ("_children", "_parents", "api", "model")

    def __init__(self, model: str, api: str, parents: dict[str, Any]) -> None:
        self.model = model
        self.api = api
        self._parents = parents
        self._children: dict[str, Any] = {}

    def child(self, name: str) -> Any:
        found = self._children.get(name)
        if found is None:
            found = self._children[name] = self._parents[name].labels(self.model, self.api)
        return found

    def gap(self, gap: float, k: int, exemplar: dict[str, str] | None = None) -> None:
        """One ITL gap of k tokens: k observations of gap/k (the sum gets the exact gap)."""
        itl = self.child("itl")
        if k == 1:
            itl.observe(gap, exemplar)
            return
        share = gap / k
        for _ in range(k):
            itl.observe(share, exemplar)


class Recorder:
    def __init__(self, store: Store, slots: ModelSlots, slo: SLO) -> None:
        self.store = store
        self.slots = slots
        self.slo = slo
        self._requests = store.live(m.REQUESTS)
        self._errors = store.live(m.REQUEST_ERRORS)
        self._metrics = {
            "in_flight": store.live(m.IN_FLIGHT),
            "ttfb": store.live(m.TTFB),
            "ttft": store.live(m.TTFT),
            "itl": store.live(m.ITL),
            "tpot": store.live(m.TPOT),
            "e2e": store.live(m.E2E),
            "prompt_tokens": store.live(m.PROMPT_TOKENS),
            "completion_tokens": store.live(m.COMPLETION_TOKENS),
            "completion_estimated": store.live(m.COMPLETION_TOKENS_ESTIMATED),
            "request_prompt_tokens": store.live(m.REQUEST_PROMPT_TOKENS),
            "request_completion_tokens": store.live(m.REQUEST_COMPLETION_TOKENS),
            "goodput": store.live(m.GOODPUT),
            "drain_aborted": store.live(m.DRAIN_ABORTED),
        }
        self._series: dict[tuple[str, str], Series] = {}
        self._codes: dict[tuple[str, str, int], Any] = {}
        self._error_children: dict[tuple[str, str, str], Any] = {}

    @classmethod
    def private(cls, max_models: int, slo: SLO) -> Recorder:
        """A recorder with its own store and model slots (one process: tests, tools)."""
        return cls(Store(), ModelSlots.create(max_models), slo)

    def model_label(self, model: str | None) -> str:
        if not model:
            return UNKNOWN_MODEL
        return label_model(self.slots, model)

    def series(self, model: str | None, api: str) -> Series:
        label = self.model_label(model)
        key = (label, api)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(label, api, self._metrics)
        return found

    def count(self, series: Series, code: int, error_type: str | None) -> None:
        key = (series.model, series.api, code)
        child = self._codes.get(key)
        if child is None:
            child = self._codes[key] = self._requests.labels(series.model, series.api, str(code))
        child.inc()
        if error_type is not None:
            self.error(series, error_type)

    def error(self, series: Series, error_type: str) -> None:
        ekey = (series.model, series.api, error_type)
        child = self._error_children.get(ekey)
        if child is None:
            child = self._error_children[ekey] = self._errors.labels(*ekey)
        child.inc()

    def observe(
        self, series: Series, record: RequestRecord, exemplar: dict[str, str] | None = None
    ) -> None:
        """Latency and token figures of one finished request; `exemplar`: its sampled trace."""
        child = series.child
        if record.ttfb is not None:
            child("ttfb").observe(record.ttfb)
        if record.ttft is not None:
            child("ttft").observe(record.ttft, exemplar)
        for gap, k in record.itl:  # empty when the meter fed series.gap as it went
            series.gap(gap, k, exemplar)
        if record.tpot is not None:
            child("tpot").observe(record.tpot)
        child("e2e").observe(record.e2e, exemplar)
        if record.prompt_tokens is not None:
            child("prompt_tokens").inc(record.prompt_tokens)
            child("request_prompt_tokens").observe(record.prompt_tokens)
        if record.completion_tokens is not None:
            child("completion_tokens").inc(record.completion_tokens)
            child("request_completion_tokens").observe(record.completion_tokens)
        elif record.completion_tokens_estimated is not None:
            child("completion_estimated").inc(record.completion_tokens_estimated)
            child("request_completion_tokens").observe(record.completion_tokens_estimated)
        if is_good(record, self.slo):
            child("goodput").inc()
