"""End to end: a real Prometheus scrapes a real sidecar; latency triples; the TTFT 2x-baseline
alert reaches a real Alertmanager, which delivers it to a webhook here; latency returns to
normal and the resolved notification follows. Windows are compressed to seconds."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import http_client
from harness.sidecar import demo_upstream, free_port, process, run_sidecar, wait_for
from infermeter.rules import Params, alert_rules, recording_rules

pytestmark = pytest.mark.e2e
FAST = Params(
    rate_window="5s",
    # the baseline: the median p99 of 30 s, 5 s old (so there is one after 5 s + 10
    # samples); the alert fires seconds after the jump, long before 20 s of raised p99s
    # would make up half of the window
    baseline_window="30s",
    baseline_offset="5s",
    baseline_min_samples=10,
    baseline_for="3s",
    min_request_rate=0.5,
    min_ttft_seconds=0.01,
)
ALERT = "InfermeterTTFTAboveBaseline"


@contextmanager
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", received
    finally:
        server.shutdown()
        server.server_close()


def traffic(url: str, stop: threading.Event) -> None:
    body = {
        "model": "llm",
        "stream": True,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "x"}],
    }
    with http_client.Client(timeout=30) as client:
        while not stop.is_set():
            client.post(url, json=body, headers={"x-demo-itl": "0.005"})
            # paced (~6 requests/s per sender, 3 senders): dozens of TTFT samples in every
            # 5 s window, without spending a core on traffic for the whole test
            stop.wait(0.1)


def firing(received: list[dict[str, Any]], status: str) -> bool:
    return any(
        alert["labels"].get("alertname") == ALERT and alert["status"] == status
        for note in received
        for alert in note["alerts"]
    )


def test_ttft_alert_fires_through_alertmanager_and_resolves(tmp_path: Path) -> None:
    prometheus, alertmanager = shutil.which("prometheus"), shutil.which("prometheus-alertmanager")
    assert prometheus, "Debian package prometheus (make test installs it)"
    assert alertmanager, "Debian package prometheus-alertmanager (make test installs it)"
    (tmp_path / "recording.yaml").write_text(recording_rules(FAST))
    (tmp_path / "alerts.yaml").write_text(alert_rules(FAST))
    prom_port, am_port = free_port(), free_port()
    with (
        webhook() as (hook, received),
        demo_upstream(tmp_path, "--ttft", "0.05") as upstream,
        run_sidecar(tmp_path, "--no-gpu-metrics", upstream=upstream) as sidecar,
    ):
        (tmp_path / "am.yaml").write_text(yaml.safe_dump({
            "route": {"receiver": "hook", "group_wait": "1s", "group_interval": "1s",
                      "repeat_interval": "1h", "group_by": ["alertname"]},
            "receivers": [{"name": "hook",
                           "webhook_configs": [{"url": hook, "send_resolved": True}]}],
        }))  # fmt: skip
        (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "external_labels": {}},
            "rule_files": ["recording.yaml", "alerts.yaml"],
            "alerting": {"alertmanagers": [
                {"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{
                "job_name": "infermeter",
                "static_configs": [{"targets": [f"127.0.0.1:{sidecar.port}"],
                                    "labels": {"namespace": "ns", "pod": "p"}}],
            }],
        }))  # fmt: skip
        am = [alertmanager, f"--config.file={tmp_path / 'am.yaml'}",
              f"--storage.path={tmp_path / 'am-data'}", f"--web.listen-address=127.0.0.1:{am_port}",
              "--cluster.listen-address="]  # fmt: skip
        prom = [prometheus, f"--config.file={tmp_path / 'prometheus.yaml'}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s"]  # fmt: skip
        stop = threading.Event()
        senders = [
            threading.Thread(
                target=traffic, args=(sidecar.proxy_url + "/v1/chat/completions", stop)
            )
            for _ in range(3)
        ]
        with process(am, tmp_path / "am.log"), process(prom, tmp_path / "prom.log"):
            for sender in senders:
                sender.start()
            try:
                api = f"http://127.0.0.1:{prom_port}/api/v1/query"
                baseline = (
                    "namespace_model:infermeter_time_to_first_token_seconds:p99_5s:baseline_30s"
                )

                def has_baseline() -> bool:
                    try:
                        return bool(
                            http_client.get(api, params={"query": baseline}).json()["data"][
                                "result"
                            ]
                        )
                    except (httpx.HTTPError, KeyError, ValueError):
                        return False

                wait_for(has_baseline, timeout=90, what="a TTFT baseline")
                assert not firing(received, "firing")
                http_client.post(upstream + "/demo/config", json={"ttft": 0.15}).raise_for_status()
                switched = time.monotonic()
                wait_for(
                    lambda: firing(received, "firing"), timeout=60, what="the alert at the webhook"
                )
                fired_after = time.monotonic() - switched
                http_client.post(upstream + "/demo/config", json={"ttft": 0.05}).raise_for_status()
                wait_for(
                    lambda: firing(received, "resolved"), timeout=60, what="the resolved notice"
                )
            except AssertionError:
                alerts = http_client.get(f"http://127.0.0.1:{prom_port}/api/v1/alerts").text
                raise AssertionError(
                    f"{alerts}\n{(tmp_path / 'prom.log').read_text()[-2000:]}"
                ) from None
            finally:
                stop.set()
                for sender in senders:
                    sender.join(30)
    alert = next(a for n in received for a in n["alerts"] if a["status"] == "firing")
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["model"] == "llm"
    assert "x its baseline" in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith("#infermeterttftabovebaseline")
    # the demo engine's queue and KV cache at firing time, from its /metrics
    assert re.search(
        r"Engine now: \d+ requests waiting, KV cache [\d.]+% full\.$",
        alert["annotations"]["description"],
    ), alert["annotations"]["description"]
    assert fired_after < 60
