"""End to end: a real Prometheus with the rules scrapes a real sidecar in front of the demo
upstream; driven past its KV capacity, the engine queues, and InfermeterEngineSaturated
fires with the engine's labels; when the load stops, it resolves. Windows compressed."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import http_client
from harness.sidecar import demo_upstream, free_port, process, run_sidecar, wait_for
from infermeter.rules import Params, alert_rules, recording_rules

pytestmark = pytest.mark.e2e
FAST = Params(rate_window="5s", engine_saturated_for="3s", engine_down_for="3s")
ALERT = "InfermeterEngineSaturated"
CAPACITY = 2


def long_streams(url: str, stop: threading.Event) -> None:
    body = {"model": "llm", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with http_client.Client(timeout=60) as client:
        while not stop.is_set():
            with client.stream(
                "POST", url, json=body, headers={"x-demo-itl": "0.05", "x-demo-tokens": "100"}
            ) as response:
                for _ in response.iter_raw():
                    if stop.is_set():
                        break


def alerts(api: str) -> list[dict[str, Any]]:
    try:
        found = http_client.get(api + "/api/v1/alerts").json()["data"]["alerts"]
    except (httpx.HTTPError, KeyError, ValueError):
        return []
    return [a for a in found if a["labels"]["alertname"] == ALERT]


def test_engine_saturated_fires_on_a_saturated_demo_engine_and_resolves(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "Debian package prometheus (make test installs it)"
    (tmp_path / "recording.yaml").write_text(recording_rules(FAST))
    (tmp_path / "alerts.yaml").write_text(alert_rules(FAST))
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with (
        demo_upstream(tmp_path, "--ttft", "0.01", "--kv-capacity", str(CAPACITY)) as upstream,
        run_sidecar(
            tmp_path, "--no-gpu-metrics", "--engine-metrics-interval", "0.5", upstream=upstream
        ) as sidecar,
    ):
        (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["recording.yaml", "alerts.yaml"],
            "scrape_configs": [{
                "job_name": "infermeter",
                "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"],
                                    "labels": {"namespace": "ns", "pod": "p"}}],
            }],
        }))  # fmt: skip
        prom = [prometheus, f"--config.file={tmp_path / 'prometheus.yaml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        with process(prom, tmp_path / "prom.log"):
            url = sidecar.proxy_url + "/v1/chat/completions"
            calm = threading.Event()
            user = threading.Thread(target=long_streams, args=(url, calm))
            user.start()
            busy = threading.Event()
            try:
                # within capacity: a running request, no queue, no alert
                sidecar.wait_metric("infermeter_engine_requests_running", 1.0, model="llm")
                wait_for(
                    lambda: http_client.get(api + "/api/v1/query", params={
                        "query": "namespace_model:infermeter_engine_requests_running:sum"
                    }).json()["data"]["result"],
                    timeout=30, what="the engine figures in Prometheus",
                )  # fmt: skip
                assert alerts(api) == []
                crowd = [
                    threading.Thread(target=long_streams, args=(url, busy))
                    for _ in range(3 * CAPACITY)
                ]
                for other in crowd:
                    other.start()
                firing = wait_for(
                    lambda: [a for a in alerts(api) if a["state"] == "firing"] or None,
                    timeout=60,
                    what="InfermeterEngineSaturated firing",
                )
                busy.set()
                for other in crowd:
                    other.join(30)
                wait_for(lambda: not alerts(api), timeout=60, what="the alert resolved")
            except AssertionError:
                raise AssertionError((tmp_path / "prom.log").read_text()[-2000:]) from None
            finally:
                busy.set()
                calm.set()
                user.join(30)
    labels = firing[0]["labels"]
    assert (labels["model"], labels["engine"], labels["severity"]) == ("llm", "vllm", "warning")
    assert float(firing[0]["value"]) == 1.0  # the KV cache is full
    assert "requests wait" in firing[0]["annotations"]["description"]
