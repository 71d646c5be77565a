"""The real sidecar re-exporting a real (loopback) engine's /metrics: the golden exposition
of a vLLM engine, and an engine /metrics that turns slow, huge, malformed or gone while the
proxy keeps serving: engine_up 0, the rest unaffected, one log line per outage.

The sidecar runs in-process (`run_inprocess`: real supervisor, engine fetch and workers on
threads of the test process); nothing here depends on the process itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import http_client
from harness.engine_server import FIXTURES, VLLM, answer, drip, engine
from harness.inprocess import run_inprocess
from harness.sidecar import stable_exposition, value
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "engine-vllm.prom"
VOLATILE = re.compile(
    r"^(process_|python_|infermeter_process_|infermeter_collector_duration_seconds|"
    r"infermeter_build_info)"
)
CHAT = "/v1/chat/completions"
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
MODEL = "llama-3.1-70b"
FAST = ("--engine-metrics-interval", "0.2", "--engine-metrics-timeout", "0.5")


def test_vllm_engine_golden_and_promtool(tmp_path: Path, update_golden: bool) -> None:
    with engine() as server:
        server.routes["/version"] = answer(b'{"version": "0.11.0"}')
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--engine-metrics", server.url + "/metrics", *FAST
        ) as sidecar:
            text = sidecar.wait_metric("infermeter_engine_up", 1.0)
    if update_golden:
        GOLDEN.write_text(stable_exposition(text, VOLATILE))
    assert stable_exposition(text, VOLATILE) == GOLDEN.read_text()
    assert value(text, "infermeter_engine_info", engine="vllm", version="0.11.0") == 1
    assert value(text, "infermeter_engine_kv_cache_usage_ratio", model="llama-3.1-70b") == 0.97
    promtool = shutil.which("promtool")
    assert promtool
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint
    assert not (lint.stdout + lint.stderr).strip(), lint


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("malformed", "not Prometheus text"),
        ("huge", "larger than"),
        ("slow", "no complete answer within 0.5 s"),
        ("gone", "Connection"),
    ],
)
def test_a_failing_engine_leaves_the_sidecar_unaffected(
    tmp_path: Path, fault: str, reason: str
) -> None:
    with scripted_upstream() as upstream, engine() as server:
        upstream.script(CHAT, Script([(0, sse(TOKEN, "[DONE]"))]))
        with run_inprocess(
            tmp_path,
            "--no-gpu-metrics",
            "--engine-metrics",
            server.url + "/metrics",
            "--engine-metrics-max-bytes",
            "65536",
            *FAST,
            upstream=upstream.url,
        ) as sidecar:
            sidecar.wait_metric("infermeter_engine_requests_waiting", 13.0, model=MODEL)
            if fault == "malformed":
                server.routes["/metrics"] = answer(b'vllm:num_requests_waiting{model_name="x\n')
            elif fault == "huge":
                server.routes["/metrics"] = answer(VLLM * 200)
            elif fault == "slow":
                server.routes["/metrics"] = drip
            else:
                server.close()
            text = sidecar.wait_metric("infermeter_engine_up", 0.0)
            assert value(text, "infermeter_engine_requests_waiting", model=MODEL) is None
            assert value(text, "infermeter_collector_success", collector="engine") == 0
            for _ in range(3):  # the proxy and the rest of /metrics carry on
                sent = http_client.post(
                    sidecar.proxy_url + CHAT, json={"model": "m", "stream": True}
                )
                assert sent.status_code == 200
            text = sidecar.wait_metric("infermeter_requests_total", 3.0, model="m", code="200")
            assert value(text, "infermeter_process_up", process="sidecar") == 1
            time.sleep(1)  # several more failed fetches
            assert sidecar.log().count("engine metrics unavailable") == 1
            assert reason in sidecar.log()
            if fault != "gone":
                server.routes["/metrics"] = answer(VLLM)
                sidecar.wait_metric("infermeter_engine_up", 1.0)
                assert sidecar.log().count("engine metrics back") == 1
    assert upstream.seen
    assert all(seen.path == CHAT for seen in upstream.seen)


def test_default_auto_on_an_upstream_without_metrics(tmp_path: Path) -> None:
    """An Ollama-like upstream (404 on /metrics): no engine series, no alert, said once."""
    with scripted_upstream() as upstream:
        upstream.script(CHAT, Script([(0, sse(TOKEN, "[DONE]"))]))
        with run_inprocess(tmp_path, "--no-gpu-metrics", *FAST, upstream=upstream.url) as sidecar:
            http_client.post(sidecar.proxy_url + CHAT, json={"model": "m", "stream": True})
            time.sleep(1)
            text = sidecar.metrics()
            assert upstream.metrics_polls >= 2
    assert "infermeter_engine_up" not in text
    assert sidecar.log().count("the upstream serves no /metrics") == 1


def test_every_fixture_engine_is_recognised_by_the_sidecar(tmp_path: Path) -> None:
    names = sorted(p.stem for p in FIXTURES.glob("*.prom"))
    with (
        engine() as server,
        run_inprocess(
            tmp_path, "--no-gpu-metrics", "--engine-metrics", server.url + "/metrics", *FAST
        ) as sidecar,
    ):
        for name in names:
            server.routes["/metrics"] = answer((FIXTURES / f"{name}.prom").read_bytes())
            engine_name = name.split("-")[0]
            sidecar.wait_metric("infermeter_engine_info", 1.0, engine=engine_name, version="")
    assert len(names) >= 9
