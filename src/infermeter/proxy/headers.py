"""Header hygiene for a transparent HTTP/1.1 proxy (RFC 9110 §7.6.1), pure functions."""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
RawHeaders = Iterable[tuple[bytes, bytes]]


def _dropped(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Hop-by-hop names, plus any the Connection header names for this hop only."""
    drop = set(HOP_BY_HOP)
    for name, value in headers:
        if name == b"connection":
            drop.update(token.strip().lower() for token in value.split(b","))
    return drop


def request_headers(
    raw: RawHeaders, client_host: str | None, scheme: str, strip: frozenset[bytes] = frozenset()
) -> list[tuple[str, str]]:
    """Headers to send upstream. Host is dropped: the client library sets the upstream's.

    `strip`: lower-case names also kept from the upstream (--strip-attribute-headers).
    """
    headers = [(name.lower(), value) for name, value in raw]
    drop = _dropped(headers)
    drop.update(strip)
    drop.add(b"host")
    drop.add(b"expect")  # the server side answered 100-continue; the body is on its way
    out: list[tuple[str, str]] = []
    forwarded_for = forwarded_proto = forwarded_host = None
    host = None
    for name, value in headers:
        if name == b"host":
            host = value
        if name in drop:
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value if forwarded_for is None else forwarded_for + b", " + value
            continue
        if name == b"x-forwarded-proto":
            forwarded_proto = value
        elif name == b"x-forwarded-host":
            forwarded_host = value
        out.append((name.decode("latin-1"), value.decode("latin-1")))
    if client_host:
        chain = (
            client_host.encode()
            if forwarded_for is None
            else forwarded_for + b", " + client_host.encode()
        )
        out.append(("x-forwarded-for", chain.decode("latin-1")))
    elif forwarded_for is not None:
        out.append(("x-forwarded-for", forwarded_for.decode("latin-1")))
    if forwarded_proto is None:
        out.append(("x-forwarded-proto", scheme))
    if forwarded_host is None and host is not None:
        out.append(("x-forwarded-host", host.decode("latin-1")))
    return out


def response_headers(raw: RawHeaders) -> list[tuple[bytes, bytes]]:
    """Headers to send to the client: everything but hop-by-hop ones."""
    headers = [(name.lower(), value) for name, value in raw]
    drop = _dropped(headers)
    return [(name, value) for name, value in headers if name not in drop]
