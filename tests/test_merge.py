"""Accumulators and their merge: exact sums across workers, bucket-wise histograms,
exemplars kept, counters monotonic when a worker dies, a cheap hand-over."""

from __future__ import annotations

import marshal
import time

import pytest

from harness.accum import StoreView
from infermeter import metrics as m
from infermeter.accumulators import FamilyDecl, Store
from infermeter.channel import Decoder, encode
from infermeter.merge import Merger
from infermeter.render import Renderer


def _worker() -> Store:
    store = Store()
    store.live(m.REQUESTS)
    store.live(m.ITL)
    store.live(m.IN_FLIGHT)
    return store


def _merger(*stores: Store) -> Merger:
    merger = Merger()
    for source, store in enumerate(stores):
        merger.declare(store.declarations())
        merger.update(source, store.take_copy())
    return merger


def test_histogram_le_is_inclusive_and_inf_catches_the_rest() -> None:
    store = Store()
    itl = store.live(m.ITL).labels("m", "chat_completions")
    for value in (0.001, 0.0010001, 99.0, -1.0):
        itl.observe(value)
    counts = itl.counts
    assert counts[0] == 2  # -1 and 0.001 (le="0.001" holds values <= 0.001)
    assert counts[1] == 1
    assert counts[-1] == 1  # +Inf
    assert itl.sum == pytest.approx(0.001 + 0.0010001 + 99.0 - 1.0)


def test_counts_are_exact_across_workers() -> None:
    a, b = _worker(), _worker()
    for i in range(1000):
        a.live(m.REQUESTS).labels("m", "chat_completions", "200").inc()
        b.live(m.REQUESTS).labels("m", "chat_completions", "200").inc(2)
        a.live(m.ITL).labels("m", "chat_completions").observe(0.001 * (i % 30))
        b.live(m.ITL).labels("m", "chat_completions").observe(0.5)
    merger = _merger(a, b)
    assert merger.value(m.REQUESTS.name, ("m", "chat_completions", "200")) == 3000.0
    counts, total, _ = merger.value(m.ITL.name, ("m", "chat_completions"))
    assert sum(counts) == 2000
    expected = a.live(m.ITL).labels("m", "chat_completions").counts
    expected = [
        x + y
        for x, y in zip(expected, b.live(m.ITL).labels("m", "chat_completions").counts, strict=True)
    ]
    assert counts == expected
    assert total == pytest.approx(sum(0.001 * (i % 30) for i in range(1000)) + 500.0)


def test_the_newest_exemplar_of_a_bucket_wins_the_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _worker(), _worker()
    monkeypatch.setattr(time, "time", lambda: 100.0)
    a.live(m.ITL).labels("m", "x").observe(0.02, {"trace_id": "a" * 32})
    monkeypatch.setattr(time, "time", lambda: 200.0)
    b.live(m.ITL).labels("m", "x").observe(0.02, {"trace_id": "b" * 32})
    b.live(m.ITL).labels("m", "x").observe(5.0)  # no exemplar: does not erase a's
    monkeypatch.setattr(time, "time", lambda: 300.0)
    a.live(m.ITL).labels("m", "x").observe(0.0011, {"trace_id": "c" * 32})
    merger = _merger(a, b)
    _, _, exemplars = merger.value(m.ITL.name, ("m", "x"))
    by_trace = {e[0]["trace_id"][0]: e for e in exemplars if e is not None}
    assert set(by_trace) == {"b", "c"}
    assert by_trace["b"][2] == 200.0
    text = Renderer(merger).render(openmetrics=True)
    assert 'trace_id="' + "b" * 32 in text
    assert 'trace_id="' + "a" * 32 not in text


def test_a_dead_worker_keeps_its_counts_and_loses_its_gauges() -> None:
    merger = Merger()
    old = _worker()
    old.live(m.REQUESTS).labels("m", "x", "200").inc(5)
    old.live(m.IN_FLIGHT).labels("m", "x").inc(3)
    merger.declare(old.declarations())
    merger.update(1, old.take_copy())
    merger.retire(1)
    fresh = _worker()  # the restarted worker starts from zero
    fresh.live(m.REQUESTS).labels("m", "x", "200").inc(1)
    merger.update(2, fresh.take_copy())
    assert merger.value(m.REQUESTS.name, ("m", "x", "200")) == 6.0
    assert merger.value(m.IN_FLIGHT.name, ("m", "x")) is None  # rendered as 0
    assert 'infermeter_requests_in_flight{api="x",model="m"} 0.0' in Renderer(merger).render(False)


def test_a_snapshot_carries_only_the_touched_series() -> None:
    store = _worker()
    family = store.live(m.REQUESTS)
    for model in ("a", "b", "c"):
        family.labels(model, "x", "200").inc()
    assert len(store.take()) == 3
    family.labels("b", "x", "200").inc()
    family.labels("b", "x", "200").inc()
    assert store.take() == [(m.REQUESTS.name, ("b", "x", "200"), 3.0)]  # cumulative
    assert store.take() == []


def test_undeclared_families_are_ignored() -> None:
    merger = Merger()
    merger.update(0, [("nope_total", (), 1.0)])
    assert merger.families == {}


def test_a_hand_over_of_64_models_is_small_and_round_trips() -> None:
    store = Store()
    for spec in (m.REQUESTS, m.TTFB, m.TTFT, m.ITL, m.TPOT, m.E2E, m.REQUEST_PROMPT_TOKENS):
        store.live(spec)
    for i in range(64):
        labels = (f"model-{i}", "chat_completions")
        store.live(m.REQUESTS).labels(*labels, "200").inc()
        for spec in (m.TTFB, m.TTFT, m.ITL, m.TPOT, m.E2E, m.REQUEST_PROMPT_TOKENS):
            store.live(spec).labels(*labels).observe(0.05, {"trace_id": "f" * 32})
    frame = encode(("snap", [tuple(d) for d in store.declarations()], store.take()))
    assert len(frame) < 600_000
    decoder = Decoder()
    messages = decoder.feed(frame[:10]) + decoder.feed(frame[10:] + encode(("ready",)))
    assert messages[1] == ("ready",)
    _, decls, items = messages[0]
    merger = Merger()
    merger.declare(FamilyDecl(*d) for d in decls)
    merger.update(0, items)
    assert len(merger.series[m.ITL.name]) == 64
    assert marshal.loads(marshal.dumps(items)) == items


def test_store_view_reads_like_a_registry() -> None:
    store = _worker()
    store.live(m.REQUESTS).labels("m", "x", "200").inc(2)
    view = StoreView(store)
    assert view.get_sample_value(m.REQUESTS.name, {"model": "m", "api": "x", "code": "200"}) == 2.0
    assert view.get_sample_value(m.REQUESTS.name, {"model": "z", "api": "x", "code": "200"}) is None


def test_a_cached_merge_follows_every_update_and_retirement() -> None:
    merger = Merger()
    stores = [_worker(), _worker(), _worker()]
    merger.declare(stores[0].declarations())
    key = (m.REQUESTS.name, ("m", "x", "200"))
    for round_ in range(1, 4):
        for source, store in enumerate(stores):
            store.live(m.REQUESTS).labels("m", "x", "200").inc()
            merger.update(source, store.take_copy())
            expected = 3 * (round_ - 1) + source + 1
            assert merger.value(*key) == float(expected)
            assert merger.value(*key) == float(expected)  # served from the cache
    merger.retire(1)
    assert merger.value(*key) == 9.0  # the retired worker's 3 are kept
    stores[1] = _worker()
    stores[1].live(m.REQUESTS).labels("m", "x", "200").inc()
    merger.update(7, stores[1].take_copy())
    assert merger.value(*key) == 10.0
