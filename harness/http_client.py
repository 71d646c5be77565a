"""httpx for tests and tools, with one TLS context per process instead of one per call.

httpx builds an SSL context for every client, and its top-level helpers (`httpx.get`,
`httpx.stream`, …) a client for every call: each loads certifi's CA bundle, about 45 ms of
CPU on the 2-vCPU machine, even for a plain-http request on loopback. The suite made
thousands of such calls (a `wait_metric` alone scrapes several times). These are httpx's
helpers with `verify` defaulting to one context, made on first use; a caller's own `verify`
(a test's private CA) still wins. Connections are not shared: each call opens its own, as
httpx's helpers do, so tests that count connections see what they saw before.
"""

from __future__ import annotations

import ssl
from contextlib import AbstractContextManager
from functools import cache
from typing import Any

import certifi
import httpx


@cache
def tls() -> ssl.SSLContext:
    """What httpx builds for `verify=True`, built once."""
    return ssl.create_default_context(cafile=certifi.where())


def _verify(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("verify", tls())
    return kwargs


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, **_verify(kwargs))


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, **_verify(kwargs))


def stream(method: str, url: str, **kwargs: Any) -> AbstractContextManager[httpx.Response]:
    return httpx.stream(method, url, **_verify(kwargs))


def Client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(**_verify(kwargs))


def AsyncClient(**kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(**_verify(kwargs))
