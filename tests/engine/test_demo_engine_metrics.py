"""The demo upstream's vLLM-shaped /metrics: recognised as vLLM, figures that follow load."""

from __future__ import annotations

import asyncio
import threading

from harness import http_client
from infermeter.demo.engine_metrics import MAX_MODELS, EngineFigures
from infermeter.demo.upstream import DemoConfig, make_app
from infermeter.engine import mapping
from infermeter.engine.fetcher import parse


def figures(text: str) -> dict[tuple[str, str], float]:
    parsed = parse(text.encode())
    table = mapping.detect(parsed.names)
    assert table is not None
    assert table.name == "vllm"
    found = mapping.figures(table, parsed.samples, mapping.ModelCap(99))
    return {(f.figure, f.model): f.value for f in found}


def test_figures_follow_the_load() -> None:
    engine = EngineFigures()
    for _ in range(6):
        engine.admit("m", 100, kv_capacity=4)
    got = figures(engine.render(4))
    assert got[("requests_running", "m")] == 4
    assert got[("requests_waiting", "m")] == 2
    assert got[("kv_cache_usage", "m")] == 1.0
    assert got[("preemptions", "m")] == 2  # two arrivals at a full cache
    assert got[("prefix_cache_queries", "m")] == 600
    assert got[("prefix_cache_hits", "m")] == 5 * 32  # all but the first share the prefix
    for _ in range(5):
        engine.release("m")
    got = figures(engine.render(4))
    assert (got[("requests_waiting", "m")], got[("kv_cache_usage", "m")]) == (0, 0.25)


def test_client_chosen_model_names_are_escaped_and_bounded() -> None:
    engine = EngineFigures()
    engine.admit('a"b\\c\nd', 1, kv_capacity=2)
    for i in range(MAX_MODELS + 5):
        engine.admit(f"m{i}", 1, kv_capacity=2)
    got = figures(engine.render(2))
    assert got[("requests_running", 'a"b\\c\nd'.replace("\n", "_"))] == 1
    models = {model for _, model in got}
    assert len(models) == MAX_MODELS + 1
    assert got[("requests_running", "_other")] == 2  # capped at the KV capacity
    assert got[("requests_waiting", "_other")] == 4


def test_the_demo_serves_metrics_and_version_while_streaming() -> None:
    """Real HTTP: a stream in flight shows up as running, then leaves."""
    from aiohttp import web

    loop = asyncio.new_event_loop()
    runner = web.AppRunner(make_app(DemoConfig(ttft=0.5, itl=0.01, output_tokens=5, kv_capacity=1)))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        body = {"model": "x", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
        with http_client.Client(timeout=5) as client:
            streams = [client.build_request("POST", url + "/v1/chat/completions", json=body)]
            sent = [client.send(streams[0], stream=True), client.send(streams[0], stream=True)]
            got = figures(client.get(url + "/metrics").text)
            assert (got[("requests_running", "x")], got[("requests_waiting", "x")]) == (1, 1)
            assert client.get(url + "/version").json()["version"].startswith("infermeter-demo-")
            for response in sent:
                response.read()
                response.close()
            got = figures(client.get(url + "/metrics").text)
            assert got[("requests_running", "x")] == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
