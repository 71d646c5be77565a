"""The interpreter seam and defensive JSON accessors shared by the formats.

Upstream JSON is untrusted: every access checks the type, so a surprising shape is read
as "nothing to observe" and never raises.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from infermeter.streams.observation import Observation


class Interpreter(Protocol):
    """Meaning of one wire format."""

    #: The format has a proper end event; a stream without it was truncated.
    expects_terminal: bool

    def event(self, name: str, data: bytes) -> Observation:
        """One streamed event: SSE ``event:`` name (``"message"`` if none, ``""`` for
        NDJSON) and its data."""
        ...

    def body(self, doc: Any) -> list[Observation]:
        """A complete non-streaming JSON body, already decoded."""
        ...


_decode = json.JSONDecoder().decode  # skips json.loads' encoding sniffing: upstreams send UTF-8


def loads(data: bytes) -> Any:
    """Parse one event's JSON; None instead of raising. Invalid UTF-8 is replaced."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
    if text[:1] == "\ufeff":
        text = text[1:]
    try:
        return _decode(text)
    except (ValueError, RecursionError):
        return None


def as_int(value: object) -> int | None:
    """A non-negative integer count, else None (bools and negatives are not counts)."""
    if type(value) is int:
        return value if value >= 0 else None
    if type(value) is float and value.is_integer() and 0 <= value < 2**53:
        return int(value)
    return None


def as_str(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if type(value) is str and value else None


def as_dict(value: object) -> dict[str, Any] | None:
    return value if type(value) is dict else None


def as_list(value: object) -> list[Any]:
    return value if type(value) is list else []


def non_empty(value: object) -> bool:
    """Carries output: a non-empty string, or a non-empty structured value."""
    if type(value) is str:
        return bool(value)
    return type(value) in (list, dict) and bool(value)


def add_ints(*values: object) -> int | None:
    """Sum of the counts present; None when none is."""
    total: int | None = None
    for v in values:
        n = as_int(v)
        if n is not None:
            total = n if total is None else total + n
    return total
