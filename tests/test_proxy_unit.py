"""Proxy pieces without a server process: header hygiene, and the measuring-failure rule.

The ASGI application is driven directly through its ASGI interface (as uvicorn drives it)
against a real scripted upstream on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from harness.accum import StoreView
from harness.asgi import call
from harness.upstream import Script, scripted_upstream, sse
from infermeter.proxy.app import ProxyApp
from infermeter.proxy.headers import request_headers, response_headers
from infermeter.proxy.recorder import OTHER_MODEL, UNKNOWN_MODEL, Recorder
from infermeter.proxy.upstream import UpstreamClient
from infermeter.streams.observation import Observation
from infermeter.streams.parsers import StreamParser, parser_for
from infermeter.streams.timing import SLO


def test_request_headers_drop_hop_by_hop_and_add_forwarding() -> None:
    raw = [
        (b"Host", b"sidecar:8090"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"TE", b"trailers"),
        (b"Upgrade", b"h2c"),
        (b"Authorization", b"Bearer k"),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Accept", b"text/event-stream"),
        (b"Accept", b"application/json"),
    ]
    out = request_headers(raw, "127.0.0.9", "http")
    names = [name for name, _ in out]
    for gone in (
        "host",
        "connection",
        "x-secret-hop",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
    ):
        assert gone not in names
    assert ("authorization", "Bearer k") in out
    assert [v for n, v in out if n == "accept"] == ["text/event-stream", "application/json"]
    assert ("x-forwarded-for", "10.0.0.1, 127.0.0.9") in out
    assert ("x-forwarded-proto", "http") in out
    assert ("x-forwarded-host", "sidecar:8090") in out


def test_existing_forwarded_proto_and_host_are_kept() -> None:
    raw = [(b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"api.example")]
    out = request_headers(raw, None, "http")
    assert ("x-forwarded-proto", "https") in out
    assert ("x-forwarded-host", "api.example") in out
    assert not [n for n, _ in out if n == "x-forwarded-for"]


def test_response_headers_drop_hop_by_hop() -> None:
    raw = [
        (b"Content-Type", b"text/event-stream"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Connection", b"close"),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"),
    ]
    assert response_headers(raw) == [
        (b"content-type", b"text/event-stream"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]


def test_model_label_is_capped_and_earned_by_a_2xx() -> None:
    recorder = Recorder.private(max_models=2, slo=SLO(None, None, None))
    assert recorder.model_label("a") == OTHER_MODEL  # not answered yet: no slot
    assert [recorder.admit(m) for m in ("a", "b", "c", "a", None, "x" * 500)] == [
        True,
        True,
        False,
        True,  # "a" has its slot already
        False,
        False,
    ]
    labels = [recorder.model_label(m) for m in ("a", "b", "c", "a", None, "x" * 500)]
    assert labels == ["a", "b", OTHER_MODEL, "a", UNKNOWN_MODEL, OTHER_MODEL]


def test_an_allow_list_fixes_the_model_labels() -> None:
    recorder = Recorder.private(64, SLO(None, None, None), models=("a", "b"))
    assert not recorder.admit("c")
    labels = [recorder.model_label(m) for m in ("a", "b", "c")]
    assert labels == ["a", "b", OTHER_MODEL]


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("\ud800", "\ufffd"),
        ("a\nb\x00c\x7f\x85", "a\ufffdb\ufffdc\ufffd\ufffd"),
        ("ok-model", "ok-model"),
        ("é" * 300, "é" * 200),
    ],
)
def test_model_labels_are_valid_utf8_without_controls(raw: str, label: str) -> None:
    recorder = Recorder.private(64, SLO(None, None, None))
    assert recorder.admit(raw)
    assert recorder.model_label(raw) == label
    label.encode("utf-8")  # would raise on a surrogate


class ExplodingParser:
    expects_terminal = True

    def feed(self, chunk: bytes) -> list[Observation]:
        raise RuntimeError("parser bug")

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        return 0, self.feed(chunk)

    def close(self) -> list[Observation]:
        return []


class CountingParser:
    """The real parser, noting how many plain output events each chunk was counted as."""

    def __init__(self, inner: StreamParser) -> None:
        self.inner = inner
        self.expects_terminal = inner.expects_terminal
        self.counted: list[int] = []

    def feed(self, chunk: bytes) -> list[Observation]:
        return self.inner.feed(chunk)

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        n, observations = self.inner.feed_outputs(chunk)
        self.counted.append(n)
        return n, observations

    def close(self) -> list[Observation]:
        return self.inner.close()


def test_measuring_counts_the_bulk_chunks_of_a_stream_in_one_call() -> None:
    """vLLM's token chunks take the counted path (`feed_outputs`, `RequestMeter.outputs`)
    and are measured as the full parse would: 4 outputs, 3 ITL gaps."""
    head = '{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,'
    role = head + '"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
    token = head + '"delta":{"content":"x"},"logprobs":null,"finish_reason":null}]}'
    finish = head + '"delta":{},"finish_reason":"stop"}]}'
    chunks = [(0.0, sse(role)), *((0.02, sse(token)) for _ in range(4))]
    parsers: list[CountingParser] = []

    def counting(*args: Any, **kwargs: Any) -> CountingParser:
        parsers.append(CountingParser(parser_for(*args, **kwargs)))
        return parsers[-1]

    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([*chunks, (0.02, sse(finish, "[DONE]"))]))
        client = UpstreamClient(pool_size=4, connect_timeout=5, read_timeout=5, total_timeout=0)
        recorder = Recorder.private(8, SLO(None, None, None), models=("m",))
        registry = StoreView(recorder.store)
        app = ProxyApp(upstream.url, client, recorder, counting)

        async def scenario() -> list[dict[str, Any]]:
            try:
                return await call(app, b'{"model": "m", "stream": true}')
            finally:
                await client.close()

        sent = asyncio.run(scenario())
    assert sent[0]["status"] == 200
    assert parsers[0].counted == [0, 1, 1, 1, 1, 0]  # the first chunk tells the model
    labels = {"model": "m", "api": "chat_completions"}
    itl = registry.get_sample_value("infermeter_inter_token_latency_seconds_count", labels)
    assert itl == 3
    tokens = registry.get_sample_value("infermeter_completion_tokens_estimated_total", {**labels})
    assert tokens == 4


def test_a_measuring_failure_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    token = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
    body = sse(token, token, "[DONE]")
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0, body[:20]), (0.01, body[20:])]))
        client = UpstreamClient(pool_size=4, connect_timeout=5, read_timeout=5, total_timeout=0)
        recorder = Recorder.private(8, SLO(None, None, None))
        registry = StoreView(recorder.store)
        app = ProxyApp(upstream.url, client, recorder, lambda *a, **k: ExplodingParser())

        async def scenario() -> list[dict[str, Any]]:
            try:
                return await call(app, b'{"model": "m", "stream": true}')
            finally:
                await client.close()

        with caplog.at_level(logging.ERROR):
            sent = asyncio.run(scenario())
    assert sent[0]["status"] == 200
    assert b"".join(m.get("body", b"") for m in sent[1:]) == body
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    labels = {"model": "m", "api": "chat_completions"}
    errors = registry.get_sample_value(
        "infermeter_request_errors_total", {**labels, "error_type": "proxy_internal"}
    )
    assert errors == 1.0
    assert registry.get_sample_value("infermeter_requests_total", {**labels, "code": "200"}) == 1.0
    assert any(r.message == "measuring failed" for r in caplog.records)


def test_a_request_the_upstream_refuses_keeps_its_model_label() -> None:
    """The body is read for its model after the request goes upstream (or before a connect
    is awaited): a request that never got there is still counted under its model."""
    with scripted_upstream() as upstream:
        dead = upstream.url
    client = UpstreamClient(pool_size=4, connect_timeout=5, read_timeout=5, total_timeout=0)
    recorder = Recorder.private(8, SLO(None, None, None), models=("m",))
    registry = StoreView(recorder.store)
    app = ProxyApp(dead, client, recorder)

    async def scenario() -> list[dict[str, Any]]:
        try:
            return await call(app, b'{"messages": [], "model": "m", "stream": true}')
        finally:
            await client.close()

    sent = asyncio.run(scenario())
    assert sent[0]["status"] == 502
    labels = {"model": "m", "api": "chat_completions"}
    assert registry.get_sample_value("infermeter_requests_total", {**labels, "code": "502"}) == 1
    assert registry.get_sample_value("infermeter_requests_in_flight", labels) == 0


def test_a_request_waiting_for_a_connection_is_already_in_flight() -> None:
    token = '{"choices":[{"index":0,"delta":{"content":"x"}}]}'
    with scripted_upstream() as upstream:
        upstream.script("/v1/chat/completions", Script([(0, sse(token)), (0.5, sse("[DONE]"))]))
        client = UpstreamClient(pool_size=1, connect_timeout=5, read_timeout=5, total_timeout=0)
        recorder = Recorder.private(8, SLO(None, None, None), models=("m",))
        registry = StoreView(recorder.store)
        app = ProxyApp(upstream.url, client, recorder)
        labels = {"model": "m", "api": "chat_completions"}

        async def scenario() -> tuple[float | None, list[dict[str, Any]], list[dict[str, Any]]]:
            try:
                body = b'{"model": "m", "stream": true}'
                first = asyncio.ensure_future(call(app, body))
                await asyncio.sleep(0.2)  # the first holds the only connection
                second = asyncio.ensure_future(call(app, body))
                await asyncio.sleep(0.1)  # the second waits for it
                during = registry.get_sample_value("infermeter_requests_in_flight", labels)
                return during, await first, await second
            finally:
                await client.close()

        during, first, second = asyncio.run(scenario())
    assert during == 2
    assert first[0]["status"] == second[0]["status"] == 200
    assert registry.get_sample_value("infermeter_requests_in_flight", labels) == 0
    assert registry.get_sample_value("infermeter_requests_total", {**labels, "code": "200"}) == 2
