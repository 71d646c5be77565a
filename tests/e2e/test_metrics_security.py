"""Scrape security: basic or bearer auth and TLS on the metrics port; probes stay open;
secrets and credentials never reach the logs.

The sidecar runs in-process (harness/inprocess.py), but in test_tls (TLS on a real
`infermeter serve` start-up) and test_bad_security_settings_exit_2 (the command's exit
code and stderr): processes. The demo upstream runs on a thread too
(`inprocess_demo_upstream`); its log lines go to no sidecar's log, as a process's would not."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from harness import http_client
from harness.inprocess import inprocess_demo_upstream, run_inprocess
from harness.sidecar import INFERMETER, free_port, wait_for

pytestmark = pytest.mark.e2e


def secret(tmp_path: Path, name: str, value: str) -> Path:
    path = tmp_path / name
    path.write_text(value + "\n")
    return path


def test_basic_auth(tmp_path: Path) -> None:
    password = secret(tmp_path, "password", "s3cret-pw")
    with run_inprocess(
        tmp_path, "--no-gpu-metrics", "--metrics-basic-auth-username", "prom",
        "--metrics-basic-auth-password-file", str(password), ready=False,
    ) as sidecar:  # fmt: skip
        sidecar.wait_ready()  # /readyz needs no credentials (kubelet probes)
        assert sidecar.get("/healthz").status_code == 200
        denied = http_client.get(sidecar.url + "/metrics")
        wrong = http_client.get(sidecar.url + "/metrics", auth=("prom", "nope"))
        allowed = http_client.get(sidecar.url + "/metrics", auth=("prom", "s3cret-pw"))
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"] == 'Basic realm="infermeter"'
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert "infermeter_build_info" in allowed.text
    assert "s3cret-pw" not in sidecar.log()


def test_bearer_token(tmp_path: Path) -> None:
    token = secret(tmp_path, "token", "tok-123")
    with run_inprocess(
        tmp_path, "--no-gpu-metrics", "--metrics-bearer-token-file", str(token)
    ) as sidecar:
        assert http_client.get(sidecar.url + "/metrics").status_code == 401
        bad = {"Authorization": "Bearer tok-124"}
        assert http_client.get(sidecar.url + "/metrics", headers=bad).status_code == 401
        good = {"Authorization": "Bearer tok-123"}
        assert http_client.get(sidecar.url + "/metrics", headers=good).status_code == 200


def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [INFERMETER, "serve", "--no-gpu-metrics", "--metrics-listen", f"127.0.0.1:{port}",
         "--metrics-tls-cert-file", str(cert), "--metrics-tls-key-file", str(key)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def scrape() -> httpx.Response | None:
            try:
                trust = ssl.create_default_context(cafile=str(cert))
                return http_client.get(f"https://127.0.0.1:{port}/metrics", verify=trust)
            except httpx.ConnectError:
                return None

        response = wait_for(scrape, what="TLS scrape")
        assert response.status_code == 200
        assert "infermeter_build_info" in response.text
        with pytest.raises(httpx.HTTPError):
            http_client.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-tls-cert-file", "/nonexistent.pem", "--metrics-tls-key-file", "/x"],
         "invalid setting metrics_tls_cert_file (--metrics-tls-cert-file='/nonexistent.pem'): "
         "cannot read"),
        (["--metrics-basic-auth-username", "prom"],
         "metrics_basic_auth_username and metrics_basic_auth_password_file go together"),
    ],
)  # fmt: skip
def test_bad_security_settings_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run([INFERMETER, "serve", *args], capture_output=True, text=True)
    assert result.returncode == 2
    assert message in result.stderr


def test_credentials_and_prompts_never_reach_the_logs(tmp_path: Path) -> None:
    canaries = {
        "authorization": "Bearer sk-canary-key-0001",
        "x-api-key": "canary-api-key-0002",
        "cookie": "session=canary-cookie-0003",
    }
    prompt = "canary-prompt-0004"
    with (
        inprocess_demo_upstream() as upstream,
        run_inprocess(
            tmp_path, "--no-gpu-metrics", "--log-level", "debug", upstream=upstream
        ) as sidecar,
    ):
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]}
        http_client.post(sidecar.proxy_url + "/v1/chat/completions", json=body, headers=canaries)
        http_client.post(
            sidecar.proxy_url + "/v1/chat/completions",
            content=b"{bad json " + prompt.encode(),
            headers=canaries,
        )
        metrics = sidecar.metrics()
    log = sidecar.log()
    for leaked in (*canaries.values(), "sk-canary", prompt):
        assert leaked not in log
        assert leaked not in metrics
