"""Turns finished request records into observations, cheaply and boundedly.

Observations go to plain accumulators (`infermeter.accumulators`) that the worker hands to
the supervisor; children of each labelled metric are looked up once per (model, api) and
cached, so the hot path does no label hashing beyond one dict lookup per request. The
`model` label is capped for the whole sidecar by the shared `ModelSlots`: a model gets its
own value once the upstream has answered it with a 2xx (or from the operator's allow-list),
up to `max_models`; until then, and beyond, it is `_other`.

The counters (requests, errors, tokens, cost) also carry the `--attribute` labels (team,
feature, ...), whose values the request's headers give; the latency histograms do not, so
attribution multiplies only a handful of counter series.
"""

from __future__ import annotations

from typing import Any, Literal, overload

from infermeter import metrics as m
from infermeter.accumulators import CounterChild, Family, GaugeChild, HistogramChild, Store
from infermeter.attribution import MISSING, Attribution
from infermeter.prices import Price, PriceBook
from infermeter.proxy.model_slots import ModelSlots
from infermeter.sanitize import clean_text
from infermeter.streams.timing import SLO, RequestRecord, is_good

OTHER_MODEL = "_other"
UNKNOWN_MODEL = "unknown"
MAX_MODEL_LENGTH = 200


def label_model(slots: ModelSlots, model: str) -> str:
    """The label of a model that may take a slot (the engine serves it): its own while
    slots last, then _other."""
    clean = clean_text(model, MAX_MODEL_LENGTH)
    return clean if slots.claim(clean) else OTHER_MODEL


def allow_list(models: tuple[str, ...]) -> list[str]:
    """The `--models` names as labels (cleaned like any model name)."""
    return [clean_text(name, MAX_MODEL_LENGTH) for name in models]


#: The per-series histograms, by their key in `Recorder._metrics`.
Histogram = Literal[
    "ttfb", "ttft", "itl", "tpot", "e2e", "request_prompt_tokens", "request_completion_tokens"
]


class Series:
    """The children of the inference metrics for one (model, api), made on first use.

    Lazily: a path that never streams (api="other" GETs, say) gets no empty TTFT or ITL
    histograms, which would cost dozens of series each.
    """

    __slots__ = ("_children", "_itl", "_parents", "api", "model")

    def __init__(self, model: str, api: str, parents: dict[str, Any]) -> None:
        self.model = model
        self.api = api
        self._parents = parents
        self._children: dict[str, Any] = {}
        self._itl: HistogramChild | None = None  # `gap` runs per token: no lookup there

    @overload
    def child(self, name: Literal["in_flight"]) -> GaugeChild: ...
    @overload
    def child(self, name: Literal["goodput", "drain_aborted"]) -> CounterChild: ...
    @overload
    def child(self, name: Histogram) -> HistogramChild: ...
    def child(self, name: str) -> CounterChild | HistogramChild:
        """The child of the series' metric `name` (a key of `Recorder._metrics`)."""
        found: CounterChild | HistogramChild | None = self._children.get(name)
        if found is None:
            found = self._children[name] = self._parents[name].labels(self.model, self.api)
        return found

    def gap(self, gap: float, k: int, exemplar: dict[str, str] | None = None) -> None:
        """One ITL gap of k tokens: k observations of gap/k (the sum gets the exact gap)."""
        itl = self._itl
        if itl is None:
            itl = self._itl = self.child("itl")
        if k == 1:
            itl.observe(gap, exemplar)
            return
        share = gap / k
        for _ in range(k):
            itl.observe(share, exemplar)


Attrs = tuple[str, ...]


class Recorder:
    def __init__(
        self,
        store: Store,
        slots: ModelSlots,
        slo: SLO,
        attribution: Attribution | None = None,
        prices: PriceBook | None = None,
    ) -> None:
        """`slots`: the model label slots (an allow-list is written into them at start)."""
        self.store = store
        self.slots = slots
        self.slo = slo
        self.attribution = attribution or Attribution((), 1)
        self.prices = prices
        extra = self.attribution.labels
        self._none: Attrs = (MISSING,) * len(extra)
        self._currency = prices.currency if prices is not None else ""

        def attributed(spec: m.MetricSpec) -> Family:
            return store.live(spec, extra)

        # registration order is exposition order: keep it stable (golden files)
        self._counters = {
            "requests": attributed(m.REQUESTS),
            "errors": attributed(m.REQUEST_ERRORS),
        }
        self._metrics = {
            "in_flight": store.live(m.IN_FLIGHT),
            "ttfb": store.live(m.TTFB),
            "ttft": store.live(m.TTFT),
            "itl": store.live(m.ITL),
            "tpot": store.live(m.TPOT),
            "e2e": store.live(m.E2E),
        }
        self._counters |= {
            "prompt_tokens": attributed(m.PROMPT_TOKENS),
            "completion_tokens": attributed(m.COMPLETION_TOKENS),
            "completion_estimated": attributed(m.COMPLETION_TOKENS_ESTIMATED),
        }
        self._metrics |= {
            "request_prompt_tokens": store.live(m.REQUEST_PROMPT_TOKENS),
            "request_completion_tokens": store.live(m.REQUEST_COMPLETION_TOKENS),
            "goodput": store.live(m.GOODPUT),
            "drain_aborted": store.live(m.DRAIN_ABORTED),
        }
        if prices is not None:
            self._counters |= {
                "cost": attributed(m.COST),
                "cost_estimated": attributed(m.COST_ESTIMATED),
            }
        self._counter_children: dict[tuple[str, str, str, str, Attrs], Any] = {}
        self._pool_timeouts = store.live(m.UPSTREAM_POOL_TIMEOUTS)
        self._series: dict[tuple[str, str], Series] = {}

    @classmethod
    def private(
        cls,
        max_models: int,
        slo: SLO,
        attribution: Attribution | None = None,
        prices: PriceBook | None = None,
        models: tuple[str, ...] = (),
    ) -> Recorder:
        """A recorder with its own store and model slots (one process: tests, tools);
        `models`: an allow-list."""
        slots = ModelSlots.create(max_models, fixed=allow_list(models))
        return cls(Store(), slots, slo, attribution, prices)

    def model_label(self, model: str | None) -> str:
        """The label of a model already known: named, or _other until it earns a slot."""
        if not model:
            return UNKNOWN_MODEL
        if model in self.slots:  # fast path: known (and so already clean)
            return model
        # valid UTF-8, no controls: scrapes work
        clean = clean_text(model, MAX_MODEL_LENGTH)
        return clean if self.slots.known(clean) else OTHER_MODEL

    def admit(self, model: str | None) -> bool:
        """The upstream answered `model` with a 2xx: give it a label slot if one is free.

        Only then, so that names the upstream rejects (a client's junk) cannot fill the
        slots before the real models come. With an allow-list, slots are fixed at start.
        The slots are the whole sidecar's (shared by the workers). True when the model has
        a slot now.
        """
        if not model:
            return False
        return self.slots.claim(clean_text(model, MAX_MODEL_LENGTH))

    def series(self, model: str | None, api: str) -> Series:
        label = self.model_label(model)
        key = (label, api)
        found = self._series.get(key)
        if found is None:
            found = self._series[key] = Series(label, api, self._metrics)
        return found

    def attrs(self, headers: Any) -> Attrs:
        """Attribute label values of a request, from its raw (ASGI) headers."""
        return self.attribution.values(headers)

    def pool_timeout(self) -> None:
        self._pool_timeouts.inc()

    def price(self, model: str | None) -> Price | None:
        """The price of a request's model (by its own name, not its capped label)."""
        return None if self.prices is None else self.prices.price(model)

    def _counter(self, name: str, series: Series, extra: str, attrs: Attrs) -> Any:
        """The child of an attributed counter; `extra`: its code/error_type/currency, or ""."""
        if len(attrs) != len(self._none):
            attrs = self._none
        key = (name, series.model, series.api, extra, attrs)
        child = self._counter_children.get(key)
        if child is None:
            values = (series.model, series.api, *((extra,) if extra else ()), *attrs)
            child = self._counter_children[key] = self._counters[name].labels(*values)
        return child

    def count(self, series: Series, code: int, error_type: str | None, attrs: Attrs = ()) -> None:
        self._counter("requests", series, str(code), attrs).inc()
        if error_type is not None:
            self.error(series, error_type, attrs)

    def error(self, series: Series, error_type: str, attrs: Attrs = ()) -> None:
        self._counter("errors", series, error_type, attrs).inc()

    def observe(
        self,
        series: Series,
        record: RequestRecord,
        exemplar: dict[str, str] | None = None,
        attrs: Attrs = (),
        price: Price | None = None,
    ) -> None:
        """Latency, token and cost figures of one finished request.

        `exemplar`: its sampled trace; `attrs`: its attribute label values; `price`: its
        model's price (None: no --prices).
        """
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
            self._counter("prompt_tokens", series, "", attrs).inc(record.prompt_tokens)
            child("request_prompt_tokens").observe(record.prompt_tokens)
        if record.completion_tokens is not None:
            self._counter("completion_tokens", series, "", attrs).inc(record.completion_tokens)
            child("request_completion_tokens").observe(record.completion_tokens)
        elif record.completion_tokens_estimated is not None:
            estimated = record.completion_tokens_estimated
            self._counter("completion_estimated", series, "", attrs).inc(estimated)
            child("request_completion_tokens").observe(estimated)
        if price is not None:
            self._cost(series, record, attrs, price)
        if is_good(record, self.slo):
            child("goodput").inc()

    def _cost(self, series: Series, record: RequestRecord, attrs: Attrs, price: Price) -> None:
        """Exact cost when the upstream reported usage, else an estimate in its own counter."""
        if record.completion_tokens is not None:
            cost = price.cost(record.prompt_tokens, record.completion_tokens)
            self._counter("cost", series, self._currency, attrs).inc(cost)
        elif record.completion_tokens_estimated is not None:
            cost = price.cost(record.prompt_tokens, record.completion_tokens_estimated)
            self._counter("cost_estimated", series, self._currency, attrs).inc(cost)
        elif record.prompt_tokens is not None:  # usage without completion tokens: embeddings
            cost = price.cost(record.prompt_tokens, None)
            self._counter("cost", series, self._currency, attrs).inc(cost)
