"""Whatever the upstream sends, the client gets exactly those bytes (hypothesis-driven)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.accum import StoreView
from harness.asgi import call
from harness.upstream import Script, scripted_upstream
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.recorder import Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.streams.api import api_for_path
from infermeter.streams.timing import SLO

PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/api/chat"]
TYPES = ["text/event-stream", "application/x-ndjson", "application/json", "text/plain"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(PATHS),
    content_type=st.sampled_from(TYPES),
    chunks=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=6),
)
def test_forwarded_bytes_are_identical(path: str, content_type: str, chunks: list[bytes]) -> None:
    with scripted_upstream() as upstream:
        upstream.script(
            path, Script([(0, c) for c in chunks], headers={"content-type": content_type})
        )
        client = UpstreamClient(pool_size=2, connect_timeout=5, read_timeout=5, total_timeout=0)
        recorder = Recorder.private(8, SLO(0.45, 0.04, None))
        registry = StoreView(recorder.store)
        app = ProxyApp(upstream.url, client, recorder)

        async def one() -> list[dict[str, object]]:
            try:
                return await call(app, b'{"model": "fz", "stream": true}', path=path)
            finally:
                await client.close()

        sent = asyncio.run(one())
    body = b"".join(m.get("body", b"") for m in sent[1:])  # type: ignore[misc]
    assert sent[0]["status"] == 200
    assert body == b"".join(chunks)
    internal = registry.get_sample_value(
        "infermeter_request_errors_total",
        {"model": "fz", "api": sent_api(path), "error_type": "proxy_internal"},
    )
    assert internal is None  # garbage is observed as less, never as a measuring failure


def sent_api(path: str) -> str:
    return api_for_path(path).value
