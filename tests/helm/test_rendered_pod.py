"""The rendered pod really starts: its infermeter container, run as rendered.

No cluster and no container engine here, so this takes the container exactly as the chart
renders it (the image's ENTRYPOINT from the Dockerfile, then the rendered args and env) and
runs that command on loopback. The only substitutions are the ones the pod network makes:
listen addresses become free 127.0.0.1 ports, and the in-pod upstream 127.0.0.1:<server port>
becomes the demo upstream. Then the probes must answer 200 on the paths and ports the kubelet
would use, a request through the Service's target port must be proxied and measured, and the
process must stop well within the pod's grace period.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import http_client
from harness.helm import CHART, ROOT, infermeter_container, one, pod_spec, render
from harness.sidecar import demo_upstream, free_port, value, wait_for

FAST = {"x-demo-ttft": "0", "x-demo-itl": "0.001"}
LISTEN_FLAGS = ("--listen=", "--metrics-listen=")


def image_entrypoint() -> list[str]:
    """ENTRYPOINT of the runtime image, from the Dockerfile (exec form)."""
    text = (ROOT / "Dockerfile").read_text()
    (entry,) = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.MULTILINE)
    argv: list[str] = json.loads(entry)
    return argv


@dataclass
class Local:
    """The rendered container as a local command, and where its container ports went."""

    argv: list[str]
    env: dict[str, str]
    ports: dict[int, int]  # containerPort -> local port
    substituted: list[str]


def localise(container: dict[str, Any], upstream_in_pod: str | None, upstream: str | None) -> Local:
    assert "command" not in container, "the chart relies on the image's ENTRYPOINT"
    (program,) = image_entrypoint()
    assert program == "infermeter"
    ports = {p["containerPort"]: free_port() for p in container["ports"]}
    argv = [str(Path(sys.executable).with_name(program))]
    substituted = []
    for arg in container["args"]:
        if arg.startswith(LISTEN_FLAGS):
            name, _, address = arg.partition("=")
            host, _, port = address.rpartition(":")
            assert host == "0.0.0.0", f"{arg}: the kubelet and the Service reach the pod IP"
            assert int(port) in ports, f"{arg} listens on a port the container does not declare"
            arg = f"{name}=127.0.0.1:{ports[int(port)]}"
            substituted.append(name)
        elif arg.startswith("--upstream="):
            assert arg == f"--upstream={upstream_in_pod}"
            arg = f"--upstream={upstream}"
            substituted.append("--upstream")
        argv.append(arg)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERMETER_")}
    for item in container.get("env", []):
        if item.get("valueFrom") == {"fieldRef": {"fieldPath": "spec.nodeName"}}:
            env[item["name"]] = "node-under-test"  # what the kubelet puts there
            continue
        assert "value" in item, f"env {item['name']} needs the cluster (valueFrom)"
        env[item["name"]] = item["value"]
    # No NVIDIA driver on this machine: the sidecar must run without NVML (infermeter_nvml_up 0).
    env["LD_LIBRARY_PATH"] = "/nonexistent-nvml"
    return Local(argv, env, ports, substituted)


@contextmanager
def started(local: Local, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        proc = subprocess.Popen(local.argv, env=local.env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def probe_url(container: dict[str, Any], probe: str, local: Local) -> str:
    get = container[probe]["httpGet"]
    port = get["port"]
    if isinstance(port, str):  # a named port, as the kubelet resolves it
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return f"http://127.0.0.1:{local.ports[port]}{get['path']}"


def wait_probes(
    container: dict[str, Any], local: Local, proc: subprocess.Popen[bytes], log: Path
) -> None:
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        url = probe_url(container, probe, local)

        def ok(url: str = url) -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"infermeter exited {proc.returncode}:\n{log.read_text()}")
            try:
                return http_client.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ok, what=f"{probe} {url}")


def stop_within_grace(proc: subprocess.Popen[bytes], spec: dict[str, Any]) -> None:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=spec["terminationGracePeriodSeconds"]) == 0
    assert time.monotonic() - began < spec["terminationGracePeriodSeconds"]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "values", [None, CHART / "ci" / "sidecar-classic-values.yaml"], ids=["native", "classic"]
)
def test_rendered_sidecar_starts_proxies_and_measures(tmp_path: Path, values: Path | None) -> None:
    manifests = render(values)
    spec = pod_spec(manifests)
    container = infermeter_container(spec)
    (server,) = [c for c in spec["containers"] if c["name"] != "infermeter"]
    (server_port,) = [p["containerPort"] for p in server["ports"]]

    # The Service sends clients to infermeter's proxy port, not to the server.
    service = one(manifests, "Service")
    (http,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    (target,) = [p["containerPort"] for p in container["ports"] if p["name"] == http["targetPort"]]
    assert target != server_port
    assert f"--listen=0.0.0.0:{target}" in container["args"]

    with demo_upstream(tmp_path) as upstream:
        local = localise(container, f"http://127.0.0.1:{server_port}", upstream)
        assert sorted(local.substituted) == ["--listen", "--metrics-listen", "--upstream"]
        log = tmp_path / "infermeter.log"
        with started(local, log) as proc:
            wait_probes(container, local, proc, log)
            body = {
                "model": "demo",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "hello"}],
            }
            url = f"http://127.0.0.1:{local.ports[target]}/v1/chat/completions"
            with http_client.stream("POST", url, json=body, headers=FAST, timeout=10) as response:
                assert response.status_code == 200
                streamed = b"".join(response.iter_raw())
            assert b"data: [DONE]" in streamed

            metrics_url = probe_url(container, "readinessProbe", local).replace(
                "/readyz", "/metrics"
            )

            def measured() -> str | None:
                text = http_client.get(metrics_url, timeout=5).text
                count = value(text, "infermeter_requests_total", api="chat_completions", code="200")
                return text if count == 1.0 else None

            text = wait_for(measured, what="the proxied request in /metrics")
            assert (
                value(text, "infermeter_time_to_first_token_seconds_count", api="chat_completions")
                == 1.0
            )
            assert value(text, "infermeter_nvml_up") == 0.0  # no GPU visible: everything else works
            stop_within_grace(proc, spec)


@pytest.mark.e2e
def test_rendered_daemonset_exports_without_a_proxy(tmp_path: Path) -> None:
    spec = pod_spec(render(CHART / "ci" / "daemonset-values.yaml"))
    container = infermeter_container(spec)
    local = localise(container, None, None)
    assert local.substituted == ["--metrics-listen"]
    log = tmp_path / "infermeter.log"
    with started(local, log) as proc:
        wait_probes(container, local, proc, log)
        text = http_client.get(
            probe_url(container, "livenessProbe", local).replace("/healthz", "/metrics"), timeout=5
        ).text
        assert value(text, "infermeter_nvml_up") == 0.0
        assert value(text, "infermeter_requests_total") is None  # proxy off
        stop_within_grace(proc, spec)
