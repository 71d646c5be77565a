"""A cap on the distinct values a client-chosen label may take (model, attributes).

The first `limit` distinct values keep their own label; later ones share `overflow`, so no
client can grow the series count without bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class LabelCap:
    """Admits the first `limit` distinct values; maps every later one to `overflow`.

    With `fixed` values (an operator's allow-list) nothing else is ever admitted.
    """

    __slots__ = ("_lock", "_seen", "fixed", "limit", "overflow")

    def __init__(self, limit: int, overflow: str = "_other", fixed: Iterable[str] = ()) -> None:
        self.limit = limit
        self.overflow = overflow
        self._seen: set[str] = set(fixed)
        self.fixed = bool(self._seen)
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        """`value` if it has a slot or gets one now, else `overflow`."""
        if value in self._seen:  # the hot path: a known value takes no lock
            return value
        return value if self.admit(value) else self.overflow

    def get(self, value: str) -> str:
        """`value` if it already has a slot, else `overflow`; never admits."""
        return value if value in self._seen else self.overflow

    def admit(self, value: str) -> bool:
        """Give `value` a slot if one is free; True when it has one now."""
        with self._lock:  # the engine fetcher's thread labels models too
            if value in self._seen:
                return True
            if self.fixed or len(self._seen) >= self.limit:
                return False
            self._seen.add(value)
        return True

    def __contains__(self, value: object) -> bool:
        return value in self._seen

    def __len__(self) -> int:
        return len(self._seen)
