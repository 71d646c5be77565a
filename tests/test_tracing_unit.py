"""Tracing off costs nothing: no span object is ever created per request."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from opentelemetry.trace import Span

from harness.asgi import call
from harness.upstream import Script, scripted_upstream, sse
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.streams.timing import SLO


def live_spans(collect: bool = True) -> int:
    """Span objects alive; without `collect`, garbage not yet collected counts too (a
    stricter count, and a full collection per request made this test take seconds)."""
    if collect:
        gc.collect()
    # isinstance against the Span ABC costs microseconds per object: count objects per
    # type (in C), then test each type once
    kinds = Counter(map(type, gc.get_objects()))
    return sum(count for kind, count in kinds.items() if issubclass(kind, Span))


def test_no_span_objects_without_tracing() -> None:
    token = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0, sse(token, token, "[DONE]"))]))
        client = UpstreamClient(pool_size=4, connect_timeout=5, read_timeout=5, total_timeout=0)
        app = ProxyApp(upstream.url, client, Recorder.private(8, SLO(None, None, None)))
        before = live_spans()

        async def many() -> int:
            try:
                counted = 0
                for _ in range(20):
                    sent = await call(app, b'{"model": "m", "stream": true}')
                    counted += sent[0]["status"] == 200
                    counted -= live_spans(collect=False) > before  # a span alive mid-run shows here
                return counted
            finally:
                await client.close()

        assert asyncio.run(many()) == 20
    assert live_spans() == before
