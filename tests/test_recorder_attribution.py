"""The recorder with attributes and prices: which counters get the labels, what costs what."""

from __future__ import annotations

import pytest

from harness.accum import StoreView
from infermeter.attribution import Attribution, parse_attributes
from infermeter.prices import parse
from infermeter.proxy.recorder import Recorder
from infermeter.streams.timing import SLO, RequestRecord

PRICES = parse({"currency": "USD", "models": {"m*": {"prompt": 2.0, "completion": 4.0}}})


def recorder(prices: bool = True) -> tuple[Recorder, StoreView]:
    attribution = Attribution(parse_attributes(["team=X-Team"]), 2)
    rec = Recorder.private(8, SLO(None, None, None), attribution, PRICES if prices else None)
    return rec, StoreView(rec.store)


def record(**fields: object) -> RequestRecord:
    base: dict[str, object] = {
        "streaming": True, "status": 200, "ttfb": 0.1, "ttft": None, "itl": (), "tpot": None,
        "e2e": 0.5, "prompt_tokens": None, "completion_tokens": None,
        "completion_tokens_estimated": None, "error_type": None, "finish_reasons": (),
        "response_model": None,
    }  # fmt: skip
    return RequestRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_counters_get_attributes_histograms_do_not() -> None:
    rec, registry = recorder()
    rec.admit("m1")  # the upstream answered it: it has a label of its own
    series = rec.series("m1", "chat_completions")
    attrs = rec.attrs([(b"x-team", b"ads")])
    rec.count(series, 200, None, attrs)
    rec.count(series, 502, "upstream_connect", attrs)
    rec.observe(
        series, record(prompt_tokens=1000, completion_tokens=500), None, attrs, rec.price("m1")
    )
    base = {"model": "m1", "api": "chat_completions", "team": "ads"}
    get = registry.get_sample_value
    assert get("infermeter_requests_total", {**base, "code": "200"}) == 1.0
    assert get("infermeter_request_errors_total", {**base, "error_type": "upstream_connect"}) == 1.0
    assert get("infermeter_prompt_tokens_total", base) == 1000.0
    assert get("infermeter_cost_total", {**base, "currency": "USD"}) == pytest.approx(0.004)
    assert (
        get("infermeter_request_duration_seconds_count", {"model": "m1", "api": "chat_completions"})
        == 1.0
    )
    # a call without attribute values (a measuring failure, say) counts under "none"
    rec.error(series, "proxy_internal")
    none = {"model": "m1", "api": "chat_completions", "team": "none"}
    assert get("infermeter_request_errors_total", {**none, "error_type": "proxy_internal"}) == 1.0


def test_estimated_cost_is_separate_and_prompt_only_usage_is_exact() -> None:
    rec, registry = recorder()
    rec.admit("m1")  # the upstream answered it: it has a label of its own
    series = rec.series("m1", "chat_completions")
    price = rec.price("m1")
    rec.observe(series, record(completion_tokens_estimated=10), None, ("a",), price)
    rec.observe(series, record(prompt_tokens=100), None, ("a",), price)  # embeddings
    labels = {"model": "m1", "api": "chat_completions", "team": "a", "currency": "USD"}
    assert registry.get_sample_value("infermeter_cost_estimated_total", labels) == pytest.approx(
        4e-5
    )
    assert registry.get_sample_value("infermeter_cost_total", labels) == pytest.approx(2e-4)


def test_model_beyond_the_cap_is_priced_by_its_own_name() -> None:
    attribution = Attribution((), 1)
    rec = Recorder.private(1, SLO(None, None, None), attribution, PRICES)
    registry = StoreView(rec.store)
    rec.admit("x")  # the one slot
    series = rec.series("m-late", "chat_completions")
    assert series.model == "_other"
    rec.observe(series, record(completion_tokens=1_000_000), None, (), rec.price("m-late"))
    labels = {"model": "_other", "api": "chat_completions", "currency": "USD"}
    assert registry.get_sample_value("infermeter_cost_total", labels) == pytest.approx(4.0)


def test_without_options_the_exposition_has_no_new_labels_or_families() -> None:
    rec = Recorder.private(8, SLO(None, None, None))
    rec.admit("m")
    series = rec.series("m", "chat_completions")
    rec.count(series, 200, None)
    rec.observe(series, record(prompt_tokens=1, completion_tokens=1), None)
    text = StoreView(rec.store).text()
    assert "infermeter_cost" not in text
    assert 'infermeter_requests_total{api="chat_completions",code="200",model="m"} 1.0' in text
    assert rec.price("m") is None
