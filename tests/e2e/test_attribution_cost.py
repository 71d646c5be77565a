"""Attribution and cost through the real sidecar: labels from headers, spend from usage."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from generate.dashboards.query import Prometheus
from harness import http_client
from harness.dashboards_live import run_prometheus
from harness.inprocess import run_inprocess
from harness.loadgen import Sample, one_stream
from harness.sidecar import SidecarClient, demo_upstream, samples, value, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e

ROLE = '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}'
TOKEN = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
USAGE = '{"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}'
COMPLETION = {
    "choices": [{"index": 0, "text": "hello", "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 250, "total_tokens": 1250},
}
PRICES = """\
currency: EUR
default: {prompt: 0.5, completion: 1.5}
models:
  "llama-3.1-8b*": {prompt: 0.05, completion: 0.10}
"""
JSON = {"content-type": "application/json"}
LLAMA = 0.05, 0.10
DEFAULT = 0.5, 1.5


def cost(price: tuple[float, float], prompt: int, completion: int) -> float:
    return (prompt * price[0] + completion * price[1]) / 1e6


def test_two_teams_pay_exactly_tokens_times_price(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRICES)
    chat = "/v1/chat/completions"
    with scripted_upstream() as upstream:
        upstream.script(chat, Script([(0, sse(ROLE, TOKEN, TOKEN, TOKEN, USAGE, "[DONE]"))]))
        upstream.script(
            "/v1/completions",
            Script([(0, json.dumps(COMPLETION).encode())], headers=JSON),
        )
        # no usage report: priced from the counted events, in the estimated counter
        upstream.script("/est" + chat, Script([(0, sse(ROLE, TOKEN, TOKEN, "[DONE]"))]))
        with run_inprocess(
            tmp_path,
            "--no-gpu-metrics",
            "--attribute", "team=X-Team",
            "--attribute", "feature=X-Feature",
            "--strip-attribute-headers",
            "--prices", str(prices),
            upstream=upstream.url,
        ) as sidecar:  # fmt: skip
            proxy = sidecar.proxy_url
            a = {"X-Team": "team-a", "X-Feature": "search"}
            b = {"X-Team": "team-b", "X-Feature": "chat"}
            body = {"model": "llama-3.1-8b-instruct", "stream": True}
            for _ in range(3):
                http_client.post(proxy + chat, json=body, headers=a).raise_for_status()
            for _ in range(2):
                http_client.post(
                    proxy + "/v1/completions", json={"model": "qwen-7b"}, headers=b
                ).raise_for_status()
            http_client.post(proxy + "/est" + chat, json=body, headers=b).raise_for_status()
            http_client.post(proxy + chat, json=body).raise_for_status()  # no team: "none"
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, team="none")
            log = sidecar.log()
            spent = spend_in_prometheus(tmp_path, sidecar)
        seen = upstream.seen
    team_a = {"team": "team-a", "feature": "search", "currency": "EUR"}
    team_b = {"team": "team-b", "feature": "chat", "currency": "EUR"}
    got_a = value(text, "infermeter_cost_total", model="llama-3.1-8b-instruct", **team_a)
    got_b = value(text, "infermeter_cost_total", model="qwen-7b", **team_b)
    assert got_a == pytest.approx(3 * cost(LLAMA, 11, 3), rel=1e-12)
    assert got_b == pytest.approx(2 * cost(DEFAULT, 1000, 250), rel=1e-12)
    estimated = value(text, "infermeter_cost_estimated_total", **team_b)
    assert estimated == pytest.approx(cost(LLAMA, 0, 2), rel=1e-12)
    assert value(text, "infermeter_cost_estimated_total", **team_a) is None
    # the same through a real Prometheus, exact and estimated spend per team
    assert spent["team-a"] == pytest.approx(3 * cost(LLAMA, 11, 3), rel=1e-12)
    assert spent["team-b"] == pytest.approx(2 * cost(DEFAULT, 1000, 250) + cost(LLAMA, 0, 2))
    none = {"team": "none", "feature": "none"}
    assert value(text, "infermeter_cost_total", **none) == pytest.approx(cost(LLAMA, 11, 3))
    # the counters carry the attribute labels ...
    assert value(text, "infermeter_requests_total", code="200", team="team-a") == 3.0
    assert value(text, "infermeter_prompt_tokens_total", team="team-b") == 2000.0
    assert value(text, "infermeter_completion_tokens_total", team="team-a") == 9.0
    assert value(text, "infermeter_completion_tokens_estimated_total", team="team-b") == 2.0
    # ... the latency histograms do not
    for (name, labels), _ in samples(text).items():
        if name.endswith(("_bucket", "_sum", "_count")) or name.endswith("_in_flight"):
            assert "team" not in dict(labels), name
    # stripped before forwarding, and never logged
    assert seen
    forwarded = [{name.lower() for name in s.headers} for s in seen]
    assert all("x-team" not in names and "x-feature" not in names for names in forwarded)
    assert all("content-type" in names for names in forwarded)  # the rest is forwarded
    assert "team-a" not in log
    assert "team-b" not in log


def spend_in_prometheus(tmp_path: Path, sidecar: SidecarClient) -> dict[str, float]:
    """Each team's spend as a real Prometheus scrapes it, once the recording rules ran."""
    with run_prometheus(tmp_path, {"pod-0": sidecar}) as url:
        prometheus = Prometheus(url)
        query = (
            "sum by (team) (infermeter_cost_total) + sum by (team) "
            "(infermeter_cost_estimated_total) or sum by (team) (infermeter_cost_total)"
        )

        def scraped() -> dict[str, float] | None:
            recorded = prometheus.query("team_currency:infermeter_spend:month_to_date", time.time())
            if not recorded:
                return None  # the rules have not run yet
            found = {s.labels["team"]: s.values[-1] for s in prometheus.query(query, time.time())}
            return found if {"team-a", "team-b"} <= set(found) else None

        return wait_for(scraped, timeout=30, what="spend in Prometheus")


def test_headers_are_forwarded_unless_stripped(tmp_path: Path) -> None:
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0, sse(TOKEN, "[DONE]"))]))
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--attribute", "team=X-Team", upstream=upstream.url
        ) as sidecar:
            http_client.post(
                sidecar.proxy_url + "/v1/chat/completions",
                json={"model": "m", "stream": True},
                headers={"X-Team": "ads"},
            ).raise_for_status()
            text = sidecar.wait_metric("infermeter_requests_total", 1.0, team="ads")
        forwarded = {name.lower(): v for name, v in upstream.seen[0].headers.items()}
        assert forwarded["x-team"] == "ads"
    assert "infermeter_cost_total" not in text  # no --prices: no cost counters at all


def test_ten_thousand_header_values_stay_bounded(tmp_path: Path) -> None:
    body = b'{"model": "m", "stream": true, "max_tokens": 1, '
    body += b'"messages": [{"role": "user", "content": "x"}]}'

    def request(i: int) -> bytes:
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
            b"x-demo-ttft: 0\r\nx-demo-itl: 0\r\nX-Team: t-%d\r\nX-Feature: f-%d\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (i, i % 7, len(body), body)
        )

    total, connections = 10_000, 50
    with (
        demo_upstream(tmp_path) as upstream_url,
        run_inprocess(
            tmp_path,
            "--no-gpu-metrics",
            "--attribute", "team=X-Team",
            "--attribute", "feature=X-Feature",
            upstream=upstream_url,
        ) as sidecar,
    ):  # fmt: skip
        port = int(sidecar.proxy_url.rsplit(":", 1)[1])

        async def worker(k: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sample = Sample()
            for i in range(k, total, connections):
                await one_stream(reader, writer, request(i), sample)
            writer.close()
            assert sample.errors == 0, vars(sample)

        async def everything() -> None:
            await asyncio.gather(*(worker(k) for k in range(connections)))

        asyncio.run(everything())

        def counted() -> str | None:
            text = sidecar.metrics("infermeter_requests_total")
            requests = samples(text)
            done = sum(v for (name, _), v in requests.items() if name.endswith("_total"))
            return text if done == total else None

        text = wait_for(counted, timeout=30, what="every request counted")
    teams, features = set(), set()
    for (name, labels), _ in samples(text).items():
        if name == "infermeter_requests_total":
            teams.add(dict(labels)["team"])
            features.add(dict(labels)["feature"])
    assert len(teams) == 33  # 32 own values and _other, whatever the clients send
    assert "_other" in teams
    assert features == {f"f-{i}" for i in range(7)}
