"""Request attribution: labels (team, feature, ...) read from request headers.

`--attribute team=X-Team` makes the value of the client's `X-Team` header a `team` label on
the request, error, token and cost counters. Header values are chosen by clients, so they are
validated (charset, length) and capped per label; they are never read from the body and never
logged. Pure logic: the proxy hands in the raw ASGI headers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from infermeter.labelcap import LabelCap

#: Label value of a request without the header (or with an empty one).
MISSING = "none"
#: Label value of a header value outside the allowed charset or length.
INVALID = "_invalid"
#: Label value once a label has `max_values` distinct values.
OTHER = "_other"
MAX_VALUE_LENGTH = 64
#: Letters, digits and `_ . : / -`, not starting with `_` (reserved for none/_other/_invalid).
VALUE = re.compile(r"[A-Za-z0-9.:/-][A-Za-z0-9_.:/-]*")
LABEL_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Labels infermeter or Prometheus already put on these series (target labels included).
RESERVED_LABELS = frozenset(
    {"model", "api", "code", "error_type", "currency", "le", "quantile", "job", "instance",
     "namespace", "pod", "container", "service", "endpoint", "node"}
)  # fmt: skip
#: Headers that must never become labels: credentials and per-request identities.
FORBIDDEN_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
     "host", "content-length", "traceparent", "tracestate"}
)  # fmt: skip
RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Attribute:
    label: str
    header: str  # lower-case

    @property
    def spec(self) -> str:
        return f"{self.label}={self.header}"


def parse_attribute(spec: str) -> Attribute:
    """`NAME=HEADER` to an Attribute; ValueError saying what is wrong."""
    label, sep, header = spec.partition("=")
    label, header = label.strip(), header.strip()
    if not sep or not label or not header:
        raise ValueError(f"expected NAME=HEADER, e.g. team=X-Team, got {spec!r}")
    if not LABEL_NAME.fullmatch(label):
        raise ValueError(f"label name {label!r} must match [a-zA-Z][a-zA-Z0-9_]*")
    if label in RESERVED_LABELS:
        raise ValueError(f"label name {label!r} clashes with a label infermeter or Prometheus sets")
    if not HEADER_NAME.fullmatch(header):
        raise ValueError(f"{header!r} is not an HTTP header name")
    if header.lower() in FORBIDDEN_HEADERS:
        raise ValueError(f"header {header!r} carries credentials or identities; not a label")
    return Attribute(label, header.lower())


def parse_attributes(specs: Sequence[str]) -> tuple[Attribute, ...]:
    attributes = tuple(parse_attribute(spec) for spec in specs)
    labels = [a.label for a in attributes]
    headers = [a.header for a in attributes]
    for name, values in (("label", labels), ("header", headers)):
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"{name} {dupes[0]!r} is given twice")
    return attributes


def valid_value(value: str) -> bool:
    return len(value) <= MAX_VALUE_LENGTH and VALUE.fullmatch(value) is not None


class Attribution:
    """Resolves a request's attribute label values from its headers, capped per label."""

    __slots__ = ("_caps", "_index", "attributes", "headers", "labels")

    def __init__(
        self,
        attributes: Sequence[Attribute],
        max_values: int,
        caps: Sequence[Callable[[str], str]] | None = None,
    ) -> None:
        """`caps`: one per attribute (the proxy workers share theirs); default: our own."""
        self.attributes = tuple(attributes)
        self.labels = tuple(a.label for a in self.attributes)
        self.headers = frozenset(a.header.encode("latin-1") for a in self.attributes)
        self._index = {a.header.encode("latin-1"): i for i, a in enumerate(self.attributes)}
        self._caps: tuple[Callable[[str], str], ...] = (
            tuple(caps)
            if caps is not None
            else tuple(LabelCap(max_values, OTHER) for _ in self.attributes)
        )

    def __bool__(self) -> bool:
        return bool(self.attributes)

    def values(self, headers: RawHeaders) -> tuple[str, ...]:
        """Label values for one request, in the order of `labels` (ASGI: lower-case names)."""
        if not self._index:
            return ()
        found: list[bytes | None] = [None] * len(self._index)
        index = self._index
        for name, value in headers:
            i = index.get(name)
            if i is not None and found[i] is None:
                found[i] = value
        return tuple(self._label(i, raw) for i, raw in enumerate(found))

    def _label(self, i: int, raw: bytes | None) -> str:
        if raw is None:
            return MISSING
        value = raw.decode("latin-1").strip(" \t")  # HTTP optional whitespace
        if not value:
            return MISSING
        if not valid_value(value):
            return INVALID
        return self._caps[i](value)
