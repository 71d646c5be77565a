"""/metrics of a scripted workload through the proxy, compared with a golden file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import http_client
from harness.inprocess import run_inprocess
from harness.sidecar import stable_exposition
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
GOLDEN = Path(__file__).parents[1] / "fixtures" / "golden" / "proxy-workload.prom"
# Timing-dependent lines: latency buckets and sums (counts stay), the sidecar's own figures.
VOLATILE = re.compile(
    r"^(process_|python_|infermeter_process_|infermeter_collector_duration_seconds|"
    r"infermeter_build_info|infermeter_event_loop_lag_seconds|infermeter_event_loop_tasks|"
    r"infermeter_worker_snapshot_age_seconds|"
    r"infermeter_\w+_seconds_(bucket|sum))"
)
ROLE = '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}'


def stable(text: str) -> str:
    return stable_exposition(text, VOLATILE)


def assert_golden(text: str, golden: Path, update: bool) -> None:
    """The exposition matches its golden file and `promtool check metrics` has nothing to say."""
    if update:
        golden.write_text(stable(text))
    assert stable(text) == golden.read_text()
    promtool = shutil.which("promtool")
    assert promtool
    lint = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint
    assert not lint.stdout.strip(), lint.stdout
    assert not lint.stderr.strip(), lint.stderr


def test_workload_golden_and_promtool(tmp_path: Path, update_golden: bool) -> None:
    chat = "/v1/chat/completions"
    with scripted_upstream() as upstream:
        upstream.script(
            chat, Script([(0, sse(ROLE)), (0.01, sse(TOKEN, TOKEN, TOKEN, USAGE, "[DONE]"))])
        )
        upstream.script("/v1/completions", Script([(0, sse(TOKEN, TOKEN))]))  # no [DONE], no usage
        upstream.script(
            "/api/generate",
            Script(
                [
                    (0, b'{"response":"a","done":false}\n'),
                    (0.01, b'{"response":"","done":true,"eval_count":2}\n'),
                ],
                headers={"content-type": "application/x-ndjson"},
            ),
        )
        upstream.script(
            "/v1/models",
            Script([(0, b'{"data":[]}')], headers={"content-type": "application/json"}),
        )
        upstream.script(
            "/bad", Script([(0, b"{}")], status=400, headers={"content-type": "application/json"})
        )
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--max-models", "2", upstream=upstream.url
        ) as sidecar:
            proxy = sidecar.proxy_url
            for model in ("llama", "llama", "qwen", "mistral", "phi"):
                http_client.post(
                    proxy + chat, json={"model": model, "stream": True}
                ).raise_for_status()
            http_client.post(proxy + "/v1/completions", json={"model": "llama", "stream": True})
            http_client.post(proxy + "/api/generate", json={"model": "llama3"})
            http_client.get(proxy + "/v1/models")
            http_client.post(proxy + "/bad", json={})
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, code="400")
    assert_golden(text, GOLDEN, update_golden)


ATTRIBUTED = GOLDEN.with_name("proxy-attribution.prom")
PRICES = """\
currency: USD
default: {prompt: 0.5, completion: 1.5}
models:
  "llama*": {prompt: 0.05, completion: 0.10}
"""


def test_attribution_and_prices_golden(tmp_path: Path, update_golden: bool) -> None:
    """--attribute and --prices: team/feature labels on the counters, and the cost counters."""
    chat = "/v1/chat/completions"
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    with scripted_upstream() as upstream:
        upstream.script(
            chat, Script([(0, sse(ROLE)), (0.01, sse(TOKEN, TOKEN, TOKEN, USAGE, "[DONE]"))])
        )
        upstream.script("/v1/completions", Script([(0, sse(TOKEN, TOKEN, "[DONE]"))]))  # no usage
        with run_inprocess(
            tmp_path,
            "--no-gpu-metrics",
            "--attribute", "team=X-Team",
            "--attribute", "feature=X-Feature",
            "--prices", str(prices),
            upstream=upstream.url,
        ) as sidecar:  # fmt: skip
            proxy = sidecar.proxy_url
            ads = {"X-Team": "ads", "X-Feature": "search"}
            for model, headers in (("llama", ads), ("qwen", ads), ("llama", {"X-Team": "a b"})):
                http_client.post(
                    proxy + chat, json={"model": model, "stream": True}, headers=headers
                ).raise_for_status()
            http_client.post(proxy + "/v1/completions", json={"model": "llama", "stream": True})
            text = sidecar.wait_metric(
                "infermeter_requests_total", 1.0, api="completions", team="none"
            )
    assert_golden(text, ATTRIBUTED, update_golden)
