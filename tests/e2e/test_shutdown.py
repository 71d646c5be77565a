"""Graceful shutdown: SIGTERM stops accepting, reports not ready, drains, exits 0."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from harness import http_client
from harness.sidecar import run_sidecar, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("workers")]
CHAT = "/v1/chat/completions"
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
BODY = {"model": "m", "stream": True}


def stream_in_background(
    url: str, into: list[bytes], errors: list[BaseException]
) -> threading.Thread:
    def run() -> None:
        try:
            with http_client.stream("POST", url, json=BODY, timeout=30) as response:
                into.extend(response.iter_raw())
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_in_flight_stream_finishes_within_the_drain_timeout(tmp_path: Path) -> None:
    chunks = [(0, sse(TOKEN))] + [(0.1, sse(TOKEN))] * 10 + [(0, sse("[DONE]"))]  # ~1 s
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script(chunks))
        with run_sidecar(
            tmp_path, "--no-gpu-metrics", "--drain-timeout", "10", upstream=upstream.url
        ) as sidecar:
            received: list[bytes] = []
            errors: list[BaseException] = []
            thread = stream_in_background(sidecar.proxy_url + CHAT, received, errors)
            wait_for(lambda: received, what="first chunk")
            sidecar.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: sidecar.get("/readyz").status_code == 503, what="not ready")
            with pytest.raises(httpx.ConnectError):
                http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=5)
            thread.join(10)
            code = sidecar.proc.wait(timeout=15)
    assert errors == []
    assert b"".join(received).endswith(b"data: [DONE]\n\n")
    assert code == 0
    assert "draining" in sidecar.log()
    assert "drain timeout" not in sidecar.log()


def test_streams_open_at_the_deadline_are_ended_cleanly_and_counted(tmp_path: Path) -> None:
    chunks = [(0, sse(TOKEN))] + [(0.1, sse(TOKEN))] * 100  # ~10 s
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script(chunks))
        with run_sidecar(
            tmp_path, "--no-gpu-metrics", "--drain-timeout", "1", upstream=upstream.url
        ) as sidecar:
            received: list[bytes] = []
            errors: list[BaseException] = []
            thread = stream_in_background(sidecar.proxy_url + CHAT, received, errors)
            wait_for(lambda: received, what="first chunk")
            sidecar.proc.send_signal(signal.SIGTERM)
            thread.join(10)
            code = sidecar.proc.wait(timeout=15)
    assert errors == []  # a clean end of the response, not a reset
    assert not thread.is_alive()
    assert code == 0
    assert 'drain timeout: open requests were ended" requests=1' in sidecar.log()
