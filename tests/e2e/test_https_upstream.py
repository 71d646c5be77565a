"""An upstream behind TLS: the proxy verifies its certificate against the trust store.

The upstream is the demo server on a real TLS socket with a certificate from a test CA
(trustme). The sidecar trusts that CA only when `SSL_CERT_FILE` names it, as OpenSSL's
default verify paths do; otherwise the client gets a 502 naming the failed verification.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from harness import http_client
from harness.sidecar import free_port, run_sidecar
from infermeter.demo.upstream import DemoConfig, make_app

pytestmark = pytest.mark.e2e
BODY = {
    "model": "demo-model",
    "stream": True,
    "max_tokens": 3,
    "messages": [{"role": "user", "content": "hi"}],
}


@contextmanager
def tls_upstream(ca: trustme.CA) -> Iterator[str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(DemoConfig(ttft=0.01, itl=0.005)))
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_streams_through_a_verified_tls_upstream(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with (
        tls_upstream(ca) as upstream,
        run_sidecar(
            tmp_path, "--no-gpu-metrics", upstream=upstream, env={"SSL_CERT_FILE": str(ca_file)}
        ) as sidecar,
    ):
        response = http_client.post(
            sidecar.proxy_url + "/v1/chat/completions", json=BODY, timeout=10
        )
        text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="200")
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert "infermeter_time_to_first_token_seconds_count" in text


def test_an_untrusted_tls_upstream_is_a_502_naming_the_verification(tmp_path: Path) -> None:
    with (
        tls_upstream(trustme.CA()) as upstream,
        run_sidecar(tmp_path, "--no-gpu-metrics", upstream=upstream) as sidecar,
    ):
        response = http_client.post(
            sidecar.proxy_url + "/v1/chat/completions", json=BODY, timeout=10
        )
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["type"] == "upstream_connect"
    assert "CERTIFICATE_VERIFY_FAILED" in error["message"]
