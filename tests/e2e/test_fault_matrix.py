"""The rest of the fault matrix: each fault, what the client sees, what is counted.

The sidecar runs in-process (harness/inprocess.py), but for two tests where the process is
the point: the GPU test (NVML, the fake library and its state file, is process-wide) and the
50 MB upload (the sidecar's own RSS shows the body was streamed, not held)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import http_client
from harness.fake_nvml import profiles
from harness.inprocess import run_inprocess
from harness.sidecar import demo_upstream, read_until_cut, run_sidecar, value
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
BODY = {"model": "m", "stream": True}
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'


def test_headers_then_stall_cuts_the_stream_at_the_read_timeout(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(TOKEN))], end="stall"))
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--upstream-read-timeout", "0.5", upstream=upstream.url
        ) as sidecar:
            received, error = read_until_cut(sidecar.proxy_url + CHAT, BODY)
            assert isinstance(error, httpx.RemoteProtocolError)
            text = sidecar.wait_metric(
                "infermeter_request_errors_total", 1.0, error_type="upstream_timeout"
            )
    assert received == sse(TOKEN)
    assert value(text, "infermeter_requests_total", code="200") == 1.0


@contextlib.contextmanager
def raw_upstream(response: bytes) -> Iterator[str]:
    """An upstream speaking hand-written HTTP (chunked with trailers), one response each."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += conn.recv(65536)
                conn.sendall(response)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_chunked_response_with_trailers(tmp_path: Path) -> None:
    events = sse(TOKEN, "[DONE]")
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"Trailer: X-Checksum\r\nConnection: close\r\n\r\n"
        + b"%x\r\n" % len(events)
        + events
        + b"\r\n0\r\nX-Checksum: abc\r\n\r\n"
    )
    with (
        raw_upstream(response) as url,
        run_inprocess(tmp_path, "--no-gpu-metrics", upstream=url) as sidecar,
    ):
        proxied = http_client.post(sidecar.proxy_url + CHAT, json=BODY)
        text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
    assert proxied.content == events  # trailers are dropped: ASGI servers cannot send them
    assert value(text, "infermeter_time_to_first_token_seconds_count", model="m") == 1.0
    assert value(text, "infermeter_request_errors_total") is None


def test_huge_response_headers_pass(tmp_path: Path) -> None:
    big = "v" * 32_000
    with scripted_upstream() as upstream:
        upstream.script(
            CHAT,
            Script(
                [(0, sse(TOKEN, "[DONE]"))],
                headers={"content-type": "text/event-stream", "x-big": big},
            ),
        )
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY)
    assert response.status_code == 200
    assert response.headers["x-big"] == big


def test_expect_100_continue(tmp_path: Path) -> None:
    body = b'{"model": "m", "stream": true}'
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(TOKEN, "[DONE]"))]))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            port = int(sidecar.proxy_url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                )
                first = raw.recv(65536)
                raw.sendall(body)
                rest = b""
                while b"[DONE]" not in rest:
                    rest += raw.recv(65536)
    assert first.startswith(b"HTTP/1.1 100 Continue")
    assert b"HTTP/1.1 200" in rest
    assert "expect" not in {k.lower() for k in upstream.seen[0].headers}


def test_malformed_http_gets_400_and_the_proxy_keeps_serving(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(TOKEN, "[DONE]"))]))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            port = int(sidecar.proxy_url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                raw.sendall(b"GARBAGE \x00\x01 NOT HTTP\r\n\r\n")
                answer = raw.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400")
            assert http_client.post(sidecar.proxy_url + CHAT, json=BODY).status_code == 200
    assert upstream.seen[0].path == CHAT  # the garbage never reached the upstream


def test_fifty_megabyte_upload_streams_through(tmp_path: Path) -> None:
    payload = b'{"model": "big", "prompt": "' + b"a" * (50 * 1024 * 1024) + b'"}'
    with scripted_upstream() as upstream:
        upstream.script(
            "/v1/completions",
            Script(
                [(0, b'{"usage": {"prompt_tokens": 1}}')],
                headers={"content-type": "application/json"},
            ),
        )
        with run_sidecar(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            response = http_client.post(
                sidecar.proxy_url + "/v1/completions", content=payload, timeout=60,
                headers={"content-type": "application/json"},
            )  # fmt: skip
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
            rss = value(text, "infermeter_process_resident_memory_bytes", process="sidecar")
    assert response.status_code == 200
    assert upstream.seen[0].body == payload
    assert value(text, "infermeter_requests_total", model="big", code="200") == 1.0
    assert rss is not None
    assert rss < 400 * 1024 * 1024  # streamed, not held whole (8 MiB inspection cap)


def test_gpu_lost_under_load_never_disturbs_the_traffic(
    tmp_path: Path, fake_nvml_dir: Path
) -> None:
    devices = [profiles.gpu(0), profiles.gpu(1)]
    state = tmp_path / "nvml.json"
    profiles.write(state, profiles.state(devices))
    with demo_upstream(tmp_path) as upstream, run_sidecar(
        tmp_path, "--gpu-poll-interval", "0.1", lib_dir=fake_nvml_dir, nvml_state=state,
        upstream=upstream,
    ) as sidecar:  # fmt: skip
        sidecar.wait_metric("infermeter_gpu_up", 1.0, gpu="1")
        statuses: list[int] = []

        async def traffic() -> None:
            async with http_client.AsyncClient(timeout=30) as client:
                for i in range(60):
                    if i == 20:
                        devices[1]["fault"] = "GPU_IS_LOST"
                        profiles.write(state, profiles.state(devices))
                    response = await client.post(
                        sidecar.proxy_url + CHAT,
                        json={
                            **BODY,
                            "messages": [{"role": "user", "content": "x"}],
                            "max_tokens": 4,
                        },
                        headers={"x-demo-ttft": "0.005", "x-demo-itl": "0.002"},
                    )
                    statuses.append(response.status_code)

        asyncio.run(traffic())
        text = sidecar.wait_metric("infermeter_gpu_up", 0.0, gpu="1")
    assert statuses == [200] * 60
    assert value(text, "infermeter_gpu_up", gpu="0") == 1.0
    assert value(text, "infermeter_requests_total", model="m", code="200") == 60.0
