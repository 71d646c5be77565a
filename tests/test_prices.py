from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from infermeter import prices
from infermeter.prices import CACHE_SIZE, Price, PricesError, load, parse

EXAMPLE = """
currency: USD
default: {prompt: 0.5, completion: 1.5}
models:
  "llama-3.1-8b*": {prompt: 0.05, completion: 0.10}
  "llama-*": {prompt: 1, completion: 2}
  "llama-3.1-8b-instruct-exact": {prompt: 7, completion: 8}
  gpt-4o: {completion: 10}
"""


def test_example_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(EXAMPLE)
    book = load(path)
    assert book.currency == "USD"
    assert book.price("llama-3.1-8b-instruct") == Price(0.05, 0.10)  # first glob in file order
    assert book.price("llama-3.1-8b-instruct-exact") == Price(7, 8)  # exact wins over globs
    assert book.price("llama-3.3-70b") == Price(1, 2)
    assert book.price("gpt-4o") == Price(0.0, 10.0)  # a missing side is free
    assert book.price("mistral") == Price(0.5, 1.5)  # default
    assert book.price(None) == Price(0.5, 1.5)


def test_cost_is_tokens_times_price_per_million() -> None:
    price = Price(prompt=0.05, completion=0.10)
    assert price.cost(1_000_000, 2_000_000) == pytest.approx(0.25)
    assert price.cost(11, 3) == pytest.approx((11 * 0.05 + 3 * 0.10) / 1e6)
    assert price.cost(None, None) == 0.0


def test_a_glob_is_matched_once_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    book = parse({"currency": "EUR", "models": {"m-*": {"prompt": 1, "completion": 1}}})
    calls = 0

    def counting(name: str, pattern: str) -> bool:
        nonlocal calls
        calls += 1
        return fnmatchcase(name, pattern)

    monkeypatch.setattr(prices, "fnmatchcase", counting)
    for _ in range(1000):
        assert book.price("m-1") == Price(1, 1)
    assert calls == 1
    for i in range(CACHE_SIZE + 10):  # clients choose model names: the cache stays bounded
        book.price(f"x-{i}")
    assert len(book._cache) == CACHE_SIZE


def test_default_is_free_when_absent() -> None:
    assert parse({"currency": "USD"}).price("anything") == Price(0.0, 0.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "expected a mapping"),
        ({"models": {}}, "currency"),
        ({"currency": "US D"}, "currency"),
        ({"currency": "USD", "curency": 1}, "unknown key 'curency'"),
        ({"currency": "USD", "default": {"prompt": -1}}, r"default\.prompt: expected a finite"),
        ({"currency": "USD", "default": {"prompt": "cheap"}}, "expected a number"),
        ({"currency": "USD", "default": {"prompt": True}}, "expected a number"),
        ({"currency": "USD", "default": {"prompt": float("inf")}}, "finite"),
        ({"currency": "USD", "default": 3}, "expected {prompt"),
        ({"currency": "USD", "models": {"m": {"input": 1}}}, r"models\['m'\]: unknown key 'input'"),
        ({"currency": "USD", "models": ["m"]}, "models: expected a mapping"),
        ({"currency": "USD", "models": {1: {"prompt": 1}}}, "non-empty strings"),
    ],
)
def test_bad_files_say_where(data: Any, message: str) -> None:
    with pytest.raises(PricesError, match=message):
        parse(data)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(PricesError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("currency: [USD\n")
    with pytest.raises(PricesError, match="not valid YAML"):
        load(bad)
