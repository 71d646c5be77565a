"""A cap on the distinct values a client-chosen label may take (model, attributes).

The first `limit` distinct values keep their own label; later ones share `overflow`, so no
client can grow the series count without bound.
"""

from __future__ import annotations


class LabelCap:
    """Admits the first `limit` distinct values; maps every later one to `overflow`.

    One thread only (a worker's loop, the engine fetcher's thread): the whole sidecar's
    shared caps are `proxy.model_slots`.
    """

    __slots__ = ("_seen", "limit", "overflow")

    def __init__(self, limit: int, overflow: str = "_other") -> None:
        self.limit = limit
        self.overflow = overflow
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return self.overflow
        self._seen.add(value)
        return value

    def __len__(self) -> int:
        return len(self._seen)
