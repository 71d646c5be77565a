"""One test per failure of the proxy: what the client sees and what the metrics count."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from harness import http_client
from harness.inprocess import run_inprocess
from harness.sidecar import free_port, read_until_cut, samples, value, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
CHAT = "/v1/chat/completions"
BODY = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
ROLE = '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'


def errors(text: str, error_type: str) -> float | None:
    return value(text, "infermeter_request_errors_total", error_type=error_type)


def test_upstream_refused_gives_502_json_naming_the_upstream(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=dead) as sidecar:
        response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
        text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="502")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_connect"
    assert error["upstream"] == dead
    assert "cannot connect" in error["message"]
    assert errors(text, "upstream_connect") == 1.0
    # m1 was never answered with a 2xx: it has no label slot of its own
    assert value(text, "infermeter_requests_in_flight", model="_other") == 0.0


def test_upstream_silent_gives_504(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script(head_delay=30))
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--upstream-read-timeout", "0.5", upstream=upstream.url
        ) as sidecar:
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="504")
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    assert errors(text, "upstream_timeout") == 1.0


def test_upstream_reset_mid_stream_ends_the_client_stream(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(ROLE, TOKEN)), (0.05, sse(TOKEN))], end="reset"))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            received, error = read_until_cut(sidecar.proxy_url + CHAT, BODY)
            assert isinstance(error, httpx.RemoteProtocolError)
            text = sidecar.wait_metric(
                "infermeter_request_errors_total", 1.0, error_type="stream_truncated"
            )
    assert received == sse(ROLE, TOKEN, TOKEN)  # all sent before the reset arrived
    assert value(text, "infermeter_time_to_first_token_seconds_count", model="m1") == 1.0
    assert "upstream stream ended early" in sidecar.log()
    assert "Exception in ASGI application" not in sidecar.log()


def test_stream_cut_before_done_is_truncated(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(ROLE, TOKEN, TOKEN))]))  # clean end, no [DONE]
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
    assert response.content == sse(ROLE, TOKEN, TOKEN)
    assert errors(text, "stream_truncated") == 1.0


def test_error_event_in_a_200_stream_is_a_stream_error(tmp_path: Path) -> None:
    failure = '{"error":{"message":"boom","type":"InternalServerError","code":500}}'
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(ROLE, TOKEN)), (0.01, sse(failure, "[DONE]"))]))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
    assert response.content == sse(ROLE, TOKEN) + sse(failure, "[DONE]")
    assert errors(text, "stream_error") == 1.0
    assert value(text, "infermeter_goodput_requests_total", model="m1") is None


@pytest.mark.parametrize(
    ("status", "error_type"), [(400, "upstream_http_4xx"), (503, "upstream_http_5xx")]
)
def test_upstream_http_errors_pass_through(tmp_path: Path, status: int, error_type: str) -> None:
    body = json.dumps({"error": {"message": "nope", "code": status}}).encode()
    with scripted_upstream() as upstream:
        upstream.script(
            CHAT, Script([(0, body)], status=status, headers={"content-type": "application/json"})
        )
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code=str(status))
    assert (response.status_code, response.content) == (status, body)
    assert errors(text, error_type) == 1.0


def test_client_disconnect_cancels_the_upstream_request(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        chunks = [(0, sse(ROLE, TOKEN))] + [(0.05, sse(TOKEN))] * 200  # a 10 s stream
        upstream.script(CHAT, Script(chunks))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            with http_client.stream(
                "POST", sidecar.proxy_url + CHAT, json=BODY, timeout=10
            ) as response:
                for _ in response.iter_raw():
                    break  # read the first chunk, then hang up
            started = time.monotonic()
            wait_for(lambda: upstream.seen and upstream.seen[0].gone.is_set(), 5, "upstream cancel")
            cancel_seconds = time.monotonic() - started
            text = sidecar.wait_metric(
                "infermeter_request_errors_total", 1.0, error_type="client_disconnect"
            )
    assert cancel_seconds < 5  # well before the stream would have ended
    assert value(text, "infermeter_requests_total", code="499") == 1.0
    assert value(text, "infermeter_requests_in_flight", model="m1") == 0.0
    assert value(text, "infermeter_time_to_first_token_seconds_count", model="m1") == 1.0


def test_client_disconnect_while_waiting_for_the_first_byte(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script(head_delay=30))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            with pytest.raises(httpx.ReadTimeout):
                http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=0.5)
            wait_for(lambda: upstream.seen and upstream.seen[0].gone.is_set(), 5, "upstream cancel")
            text = sidecar.wait_metric(
                "infermeter_request_errors_total", 1.0, error_type="client_disconnect"
            )
    assert value(text, "infermeter_requests_total", code="499") == 1.0


def test_client_gone_mid_upload_is_a_client_disconnect(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(ROLE, "[DONE]"))]))
        with run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar:
            port = int(sidecar.proxy_url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as raw:
                raw.sendall(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
                    + b'{"model": "up", "messages": "'
                    + b"a" * 200_000
                )
                time.sleep(0.3)
            text = sidecar.wait_metric(
                "infermeter_request_errors_total", 1.0, error_type="client_disconnect"
            )
    assert value(text, "infermeter_requests_total", code="499") == 1.0
    assert value(text, "infermeter_request_errors_total", error_type="upstream_connect") is None
    in_flight = [v for (n, _), v in samples(text).items() if n == "infermeter_requests_in_flight"]
    assert all(v == 0.0 for v in in_flight)


def test_client_gone_before_the_body_leaves_nothing_in_flight(tmp_path: Path) -> None:
    with (
        scripted_upstream() as upstream,
        run_inprocess(tmp_path, "--no-gpu-metrics", upstream=upstream.url) as sidecar,
    ):
        port = int(sidecar.proxy_url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
            )
            time.sleep(0.3)
        text = sidecar.wait_metric(
            "infermeter_request_errors_total", 1.0, error_type="client_disconnect"
        )
    in_flight = [v for (n, _), v in samples(text).items() if n == "infermeter_requests_in_flight"]
    assert all(v == 0.0 for v in in_flight)
