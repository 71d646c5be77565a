"""The pure parts of the connection guard (the protocol itself: tests/e2e/test_hostile.py)."""

from __future__ import annotations

import pytest

from infermeter.accumulators import Store
from infermeter.guard import (
    FD_RESERVE,
    counting,
    proxy_connection_budget,
    relay_cycle,
    response,
    share,
)
from infermeter.metrics import HTTP_REJECTED


def test_the_proxy_leaves_room_for_the_metrics_port_within_the_open_file_limit() -> None:
    assert proxy_connection_budget(4096, 1024, 64) == (1024 - 64 - FD_RESERVE) // 2
    assert proxy_connection_budget(4096, 1 << 20, 64) == 4096
    assert proxy_connection_budget(4096, 100, 64) == 1  # never zero


def test_refusal_is_a_complete_response_that_closes() -> None:
    raw = response(431, "request header fields too large")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"connection: close" in head
    assert b"content-length: %d" % len(body) in head


@pytest.mark.parametrize(
    ("total", "workers", "each"), [(4096, 1, 4096), (4096, 2, 2048), (5, 2, 3), (1, 4, 1)]
)
def test_a_sidecar_wide_budget_is_shared_evenly_rounded_up(
    total: int, workers: int, each: int
) -> None:
    assert share(total, workers) == each
    assert share(total, workers) * workers >= total


def test_refusals_are_counted_per_reason_in_any_labelled_family() -> None:
    store = Store()
    reject = counting(store.live(HTTP_REJECTED), "proxy")
    for reason in ("head_too_large", "head_too_large", "header_timeout"):
        reject(reason)
    taken = {labels: value for _, labels, value in store.take()}
    assert taken == {("proxy", "head_too_large"): 2.0, ("proxy", "header_timeout"): 1.0}


def test_relay_cycle_is_uvicorns_cycle_behind_send_and_nothing_else() -> None:
    """The relay's seam: uvicorn's httptools cycle (whose state the relay keeps) or None,
    so that a test's fake `send` or another server gets plain ASGI messages."""
    import asyncio
    import logging

    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    class Transport:
        def write(self, data: bytes) -> None: ...

    cycle = RequestResponseCycle(
        scope={"type": "http", "method": "GET"},  # type: ignore[typeddict-item]
        transport=Transport(),  # type: ignore[arg-type]
        flow=FlowControl(Transport()),  # type: ignore[arg-type]
        logger=logging.getLogger("t"),
        access_logger=logging.getLogger("t"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    assert relay_cycle(cycle.send) is cycle
    for name in ("disconnected", "chunked_encoding", "flow", "transport"):
        assert hasattr(cycle, name), name  # what the relay reads (proxy/app.py, _Relay)
    assert hasattr(cycle.flow, "write_paused")

    async def fake_send(message: object) -> None: ...

    class Other:
        async def send(self, message: object) -> None: ...

    assert relay_cycle(fake_send) is None
    assert relay_cycle(Other().send) is None
