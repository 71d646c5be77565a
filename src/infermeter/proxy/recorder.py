"""Turns finished request records into Prometheus observations, cheaply and boundedly.

Children of each labelled metric are looked up once per (model, api) and cached, so the
hot path does no label hashing beyond one dict lookup per request. The `model` label is
capped: a model gets its own value once the upstream has answered it with a 2xx (or from
the operator's allow-list), up to `max_models`; until then, and beyond, it is `_other`.
"""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter

from infermeter import metrics as m
from infermeter.sanitize import clean_text
from infermeter.streams.timing import SLO, RequestRecord, is_good

OTHER_MODEL = "_other"
UNKNOWN_MODEL = "unknown"
MAX_MODEL_LENGTH = 200


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
    def __init__(
        self,
        registry: CollectorRegistry,
        max_models: int,
        slo: SLO,
        models: tuple[str, ...] = (),
    ) -> None:
        self.max_models = max_models
        self.slo = slo
        self._requests = cast(Counter, m.REQUESTS.live(registry))
        self._errors = cast(Counter, m.REQUEST_ERRORS.live(registry))
        self._metrics = {
            "in_flight": m.IN_FLIGHT.live(registry),
            "ttfb": m.TTFB.live(registry),
            "ttft": m.TTFT.live(registry),
            "itl": m.ITL.live(registry),
            "tpot": m.TPOT.live(registry),
            "e2e": m.E2E.live(registry),
            "prompt_tokens": m.PROMPT_TOKENS.live(registry),
            "completion_tokens": m.COMPLETION_TOKENS.live(registry),
            "completion_estimated": m.COMPLETION_TOKENS_ESTIMATED.live(registry),
            "request_prompt_tokens": m.REQUEST_PROMPT_TOKENS.live(registry),
            "request_completion_tokens": m.REQUEST_COMPLETION_TOKENS.live(registry),
            "goodput": m.GOODPUT.live(registry),
            "drain_aborted": m.DRAIN_ABORTED.live(registry),
        }
        self._models = {clean_text(name, MAX_MODEL_LENGTH) for name in models}
        self._fixed = bool(models)  # an allow-list: no other model gets a slot
        self._pool_timeouts = cast(Counter, m.UPSTREAM_POOL_TIMEOUTS.live(registry))
        self._series: dict[tuple[str, str], Series] = {}
        self._codes: dict[tuple[str, str, int], Any] = {}
        self._error_children: dict[tuple[str, str, str], Any] = {}

    def model_label(self, model: str | None) -> str:
        """The label of a model already known: named, or _other until it earns a slot."""
        if not model:
            return UNKNOWN_MODEL
        if model in self._models:
            return model
        model = clean_text(model, MAX_MODEL_LENGTH)  # valid UTF-8, no controls: scrapes work
        return model if model in self._models else OTHER_MODEL

    def admit(self, model: str | None) -> bool:
        """The upstream answered `model` with a 2xx: give it a label slot if one is free.

        Only then, so that names the upstream rejects (a client's junk) cannot fill the
        slots before the real models come. With an allow-list, slots are fixed at start.
        """
        if not model or self._fixed:
            return False
        model = clean_text(model, MAX_MODEL_LENGTH)
        if model in self._models or len(self._models) >= self.max_models:
            return False
        self._models.add(model)
        return True

    def series(self, model: str | None, api: str) -> Series:
        label = self.model_label(model)
        key = (label, api)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(label, api, self._metrics)
        return found

    def pool_timeout(self) -> None:
        self._pool_timeouts.inc()

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
