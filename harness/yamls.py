"""YAML reading for tests: PyYAML's safe loading through libyaml's C parser.

The same constructors as `yaml.safe_load` (so the same Python values), parsed about ten
times faster than by the pure-Python scanner: the chart tests parse `helm template` output
and the prometheus-operator CRDs many times, which took seconds of CPU each run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

#: libyaml ships in PyYAML's wheels; the pure-Python loader stands in where it is missing.
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=LOADER)


def load_all(text: str | bytes) -> Iterator[Any]:
    return yaml.load_all(text, Loader=LOADER)
