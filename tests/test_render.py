"""The fast renderer against prometheus_client's own exposition of the same state."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client import generate_latest as text_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse

from infermeter.accumulators import Store
from infermeter.merge import Merger
from infermeter.metrics import MetricSpec
from infermeter.render import Renderer, exposition, fmt, fmt_count

disable_created_metrics()  # type: ignore[no-untyped-call]

COUNTER = MetricSpec(
    "t_requests_total", "counter", 'Requests "quoted" \\ back\nslash.', ("model", "api")
)
GAUGE = MetricSpec("t_in_flight", "gauge", "In flight.", ("model",))
HIST = MetricSpec(
    "t_latency_seconds", "histogram", "Latency.", ("model",), buckets=(0.01, 0.1, 1.0)
)
PLAIN = MetricSpec("t_plain_seconds", "histogram", "No labels.", (), buckets=(0.5,))
TRICKY = ("llama", 'q"uote', "back\\slash", "new\nline", "ünïcode", "")
OBSERVATIONS = (0.005, 0.01, 0.0100001, 0.1, 0.5, 1.0, 3.0, 7.5, 2_000_000.0)


def _drive(counter: Any, gauge: Any, hist: Any, plain: Any) -> None:
    for i, model in enumerate(TRICKY):
        counter.labels(model, "chat").inc(i + 1)
        gauge.labels(model).inc(3)
        gauge.labels(model).dec(1)
        for value in OBSERVATIONS[: i + 3]:
            exemplar = {"trace_id": f"{i:032x}", "span_id": "ab\\"} if i % 2 else None
            hist.labels(model).observe(value, exemplar)
    counter.labels("big", "chat").inc(12_345_678)
    plain.observe(0.25)
    plain.observe(0.75, {"trace_id": "f" * 32})


@pytest.fixture
def both(monkeypatch: pytest.MonkeyPatch) -> tuple[CollectorRegistry, Renderer]:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    registry = CollectorRegistry()
    _drive(
        Counter(COUNTER.name, COUNTER.help, COUNTER.labels, registry=registry),
        Gauge(GAUGE.name, GAUGE.help, GAUGE.labels, registry=registry),
        Histogram(HIST.name, HIST.help, HIST.labels, registry=registry, buckets=HIST.buckets),
        Histogram(PLAIN.name, PLAIN.help, registry=registry, buckets=PLAIN.buckets),
    )
    store = Store()
    _drive(store.live(COUNTER), store.live(GAUGE), store.live(HIST), store.live(PLAIN))
    merger = Merger()
    merger.declare(store.declarations())
    merger.update(0, store.take_copy())
    return registry, Renderer(merger)


def test_text_is_byte_identical_to_prometheus_client(
    both: tuple[CollectorRegistry, Renderer],
) -> None:
    registry, renderer = both
    ours = renderer.render(openmetrics=False)
    assert ours == text_latest(registry).decode()
    assert len(list(text_parse(ours))) == 4


def test_openmetrics_with_exemplars_is_byte_identical(
    both: tuple[CollectorRegistry, Renderer],
) -> None:
    registry, renderer = both
    ours = renderer.render(openmetrics=True) + "# EOF\n"
    assert ours == om_latest(registry).decode()
    families = {f.name: f for f in om_parse(ours)}
    exemplars = [s.exemplar for s in families["t_latency_seconds"].samples if s.exemplar]
    assert exemplars
    assert exemplars[0].labels["span_id"] == "ab\\"


def test_a_second_render_reuses_prefixes_and_sees_new_values(
    both: tuple[CollectorRegistry, Renderer],
) -> None:
    _, renderer = both
    first = renderer.render(openmetrics=False)
    assert renderer.render(openmetrics=False) == first


def test_name_filter_keeps_only_the_asked_samples(both: tuple[CollectorRegistry, Renderer]) -> None:
    _, renderer = both
    text = renderer.render(False, frozenset({"t_latency_seconds_count", "t_in_flight"}))
    names = {s.name for f in text_parse(text) for s in f.samples}
    assert names == {"t_latency_seconds_count", "t_in_flight"}


def test_exposition_puts_eof_last_once(both: tuple[CollectorRegistry, Renderer]) -> None:
    _, renderer = both
    head = CollectorRegistry()
    Gauge("t_head", "Head.", registry=head).set(1)
    body = exposition(head, renderer, None, openmetrics=True).decode()
    assert body.startswith("# HELP t_head Head.")
    assert body.endswith("# EOF\n")
    assert body.count("# EOF") == 1


@pytest.mark.parametrize(
    "value", [0.0, 1.0, -2.5, 1e-7, 123456.7, 999999.9, 1e6, 12345678.0, float("inf"), -1e9]
)
def test_fmt_matches_go_style(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert fmt(value) == floatToGoString(value)


@pytest.mark.parametrize("count", [0, 7, 999_999, 1_000_000, 123_456_789])
def test_fmt_count_matches_go_style(count: int) -> None:
    from prometheus_client.utils import floatToGoString

    assert fmt_count(count) == floatToGoString(float(count))
