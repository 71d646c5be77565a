"""Token prices (`--prices FILE`): what a request costs, from its token counts.

The file maps model names (exact, or shell-style globs such as `llama-3.1-8b*`) to a price
per million prompt tokens and per million completion tokens, in one currency:

    currency: USD
    default: {prompt: 0.0, completion: 0.0}
    models:
      "llama-3.1-8b*": {prompt: 0.05, completion: 0.10}

An exact name wins over globs; among globs the first in file order wins; a model matching
none has the default. Lookups are cached per model name, so the hot path matches a glob
once per model, not once per request. Pure logic, except `load`, which reads the file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from infermeter.yamlfile import YamlFileError, read_yaml

CURRENCY = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,15}")
PER = 1_000_000  # prices are per million tokens
#: Distinct model names whose price is remembered; beyond it (clients choose model names)
#: lookups still work, only uncached.
CACHE_SIZE = 4096


class PricesError(ValueError):
    """The prices file is unreadable or malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Price:
    prompt: float = 0.0  # per million prompt tokens
    completion: float = 0.0  # per million completion tokens

    def cost(self, prompt_tokens: int | None, completion_tokens: int | None) -> float:
        """Cost of the given tokens; unknown counts cost nothing."""
        return (
            (prompt_tokens or 0) * self.prompt + (completion_tokens or 0) * self.completion
        ) / PER


@dataclass(slots=True)
class PriceBook:
    currency: str
    default: Price = Price()
    exact: dict[str, Price] = field(default_factory=dict)
    globs: tuple[tuple[str, Price], ...] = ()
    _cache: dict[str, Price] = field(default_factory=dict, repr=False)

    def price(self, model: str | None) -> Price:
        if not model:
            return self.default
        found = self._cache.get(model)
        if found is None:
            found = self._match(model)
            if len(self._cache) < CACHE_SIZE:
                self._cache[model] = found
        return found

    def _match(self, model: str) -> Price:
        exact = self.exact.get(model)
        if exact is not None:
            return exact
        for pattern, price in self.globs:
            if fnmatchcase(model, pattern):
                return price
        return self.default


def _price(where: str, value: Any) -> Price:
    if not isinstance(value, Mapping):
        raise PricesError(f"{where}: expected {{prompt: N, completion: N}}, got {value!r}")
    unknown = sorted(set(value) - {"prompt", "completion"})
    if unknown:
        raise PricesError(f"{where}: unknown key {unknown[0]!r} (prompt, completion)")
    out = {}
    for key in ("prompt", "completion"):
        number = value.get(key, 0.0)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise PricesError(f"{where}.{key}: expected a number, got {number!r}")
        if not math.isfinite(number) or number < 0:
            raise PricesError(f"{where}.{key}: expected a finite number >= 0, got {number!r}")
        out[key] = float(number)
    return Price(**out)


def parse(data: Any) -> PriceBook:
    """A PriceBook from the parsed YAML document."""
    if not isinstance(data, Mapping):
        raise PricesError("expected a mapping with currency, default and models")
    unknown = sorted(set(data) - {"currency", "default", "models"})
    if unknown:
        raise PricesError(f"unknown key {unknown[0]!r} (currency, default, models)")
    currency = data.get("currency")
    if not isinstance(currency, str) or not CURRENCY.fullmatch(currency):
        raise PricesError(f"currency: expected a code such as USD or EUR, got {currency!r}")
    default = _price("default", data["default"]) if "default" in data else Price()
    models = data.get("models") or {}
    if not isinstance(models, Mapping):
        raise PricesError("models: expected a mapping of model name or glob to prices")
    exact: dict[str, Price] = {}
    globs: list[tuple[str, Price]] = []
    for name, value in models.items():
        if not isinstance(name, str) or not name:
            raise PricesError(f"models: model names must be non-empty strings, got {name!r}")
        price = _price(f"models[{name!r}]", value)
        if any(char in name for char in "*?["):
            globs.append((name, price))
        else:
            exact[name] = price
    return PriceBook(currency, default, exact, tuple(globs))


def load(path: Path) -> PriceBook:
    try:
        data = read_yaml(path)
    except YamlFileError as exc:
        raise PricesError(str(exc)) from None
    try:
        return parse(data)
    except PricesError as exc:
        raise PricesError(f"{path}: {exc}") from None
