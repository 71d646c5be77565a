"""Clients choose the model name; the series count must not follow them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from harness.inprocess import run_inprocess
from harness.loadgen import run_load
from harness.sidecar import demo_upstream, samples
from infermeter.proxy.recorder import Recorder
from infermeter.streams.timing import SLO

pytestmark = pytest.mark.e2e


def test_a_hundred_thousand_models_keep_the_label_bounded() -> None:
    recorder = Recorder.private(max_models=64, slo=SLO(None, None, None))
    for i in range(100_000):
        recorder.admit(f"model-{i}")  # every one answered 2xx by the upstream
    labels = {recorder.series(f"model-{i}", "chat_completions").model for i in range(100_000)}
    assert len(labels) == 65
    assert "_other" in labels


def test_distinct_models_through_the_sidecar(tmp_path: Path) -> None:
    def request(i: int) -> bytes:
        head = b'{"model": "m-%d", "stream": true, "max_tokens": 1, ' % i
        body = head + b'"messages": [{"role": "user", "content": "x"}]}'
        return (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
            b"x-demo-ttft: 0\r\nx-demo-itl: 0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    with (
        demo_upstream(tmp_path) as upstream,
        run_inprocess(
            tmp_path, "--no-gpu-metrics", "--max-models", "16", upstream=upstream
        ) as sidecar,
    ):
        port = int(sidecar.proxy_url.rsplit(":", 1)[1])

        async def many() -> None:
            for start in range(0, 2000, 100):
                await asyncio.gather(
                    *(
                        run_load("127.0.0.1", port, 1, 1, request(i))
                        for i in range(start, start + 100)
                    )
                )

        asyncio.run(many())
        text = sidecar.wait_metric(
            "infermeter_requests_total", 2000 - 16.0, model="_other", code="200"
        )
    models = {dict(labels)["model"] for (name, labels) in samples(text) if "model" in dict(labels)}
    assert len(models) == 17  # 16 own labels and _other, whatever the clients send
