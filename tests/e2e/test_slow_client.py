"""A client slower than its upstream: nothing lost, nothing reordered, every event measured.

The proxy holds at most 256 KiB of a response the client cannot take yet, then stops
reading the upstream (TCP pushes back) until the client drains. This test makes a client
with a tiny receive buffer stall while ~10 MB of events arrive at once (more than loopback
socket buffers absorb, so the proxy really pauses), then checks the bytes and the counts.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from harness.inprocess import run_inprocess
from harness.sidecar import value
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
EVENTS = 100_000  # ~10 MB: more than loopback socket buffers hold, so the proxy must buffer


def token(i: int) -> str:
    return json.dumps({"choices": [{"index": 0, "delta": {"content": f" t{i:05d}" + "x" * 40}}]})


def dechunk(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked response (head already removed)."""
    out = bytearray()
    while True:
        line, _, raw = raw.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += raw[:size]
        raw = raw[size + 2 :]


def slow_request(host: str, port: int, body: bytes) -> bytes:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sock.sendall(
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    time.sleep(1.0)  # the upstream sends everything now; the proxy must hold and push back
    received = bytearray()
    sock.settimeout(20)
    while not received.endswith(b"0\r\n\r\n"):
        data = sock.recv(8192)
        if not data:
            break
        received += data
        time.sleep(0.0005)
    sock.close()
    head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return dechunk(rest)


def test_a_slow_client_gets_every_byte_in_order_and_every_event_is_counted(
    tmp_path: Path,
) -> None:
    expected = b"".join(sse(token(i)) for i in range(EVENTS)) + sse("[DONE]")
    pieces = [(0.0, expected[i : i + 3000]) for i in range(0, len(expected), 3000)]
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script(pieces))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            host, port = str(sidecar.proxy_url).removeprefix("http://").split(":")
            body = json.dumps({"model": "slow", "stream": True, "messages": []}).encode()
            assert slow_request(host, int(port), body) == expected
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, model="slow", code="200")
    assert value(text, "infermeter_completion_tokens_estimated_total", model="slow") == EVENTS
    assert value(text, "infermeter_inter_token_latency_seconds_count", model="slow") == EVENTS - 1
    assert value(text, "infermeter_request_errors_total", model="slow") is None
