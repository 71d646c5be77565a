"""The pure parts of the connection guard (the protocol itself: tests/e2e/test_hostile.py)."""

from __future__ import annotations

from infermeter.guard import FD_RESERVE, proxy_connection_budget, response


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
