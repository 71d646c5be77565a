"""The fetcher against real loopback HTTP servers: every fetch is bounded, every failure
turns into engine_up 0 (logged once per outage), and recovery is picked up."""

from __future__ import annotations

import logging
import socket
import time
from http.server import BaseHTTPRequestHandler

import pytest

from harness.engine_server import VLLM, answer, drip, engine
from infermeter.engine.fetcher import EngineFetcher, FetchError, fetch, resolve_url


def fetcher(url: str, *, auto: bool = False, **kwargs: object) -> EngineFetcher:
    options: dict[str, object] = {"interval": 60, "timeout": 0.5, "max_bytes": 1 << 20}
    options.update(kwargs)
    return EngineFetcher(url, auto=auto, **options)  # type: ignore[arg-type]


def test_resolve_url() -> None:
    assert resolve_url("off", "http://h:8000") is None
    assert resolve_url("auto", None) is None
    assert resolve_url("auto", "https://h:8000/prefix/v1") == "https://h:8000/metrics"
    assert resolve_url("http://h:8002/metrics", "http://h:8000") == "http://h:8002/metrics"


def test_a_vllm_engine_is_recognised_mapped_and_versioned() -> None:
    with engine() as server:
        server.routes["/version"] = answer(b'{"version": "0.11.0"}')
        f = fetcher(server.url + "/metrics")
        f.poll_once()
    snap = f.snapshot()
    assert (snap.up, snap.engine, snap.version, snap.fetch_ok) == (True, "vllm", "0.11.0", True)
    values = {(s.figure, s.model): s.value for s in snap.figures}
    assert values[("requests_waiting", "llama-3.1-70b")] == 13
    assert values[("kv_cache_usage", "llama-3.1-70b")] == 0.97


def test_forced_engine_and_an_engine_without_a_version_endpoint() -> None:
    with engine() as server:
        f = fetcher(server.url + "/metrics", engine="tgi")
        f.poll_once()
    snap = f.snapshot()
    assert (snap.up, snap.engine, snap.version, snap.figures) == (True, "tgi", "", ())


def test_slow_drip_is_cut_at_the_deadline() -> None:
    with engine() as server:
        server.routes["/metrics"] = drip
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"within 0\.5 s"):
            fetch(server.url + "/metrics", 0.5, 1 << 20, "text/plain")
        assert time.monotonic() - started < 1.5


def test_slow_headers_are_cut_at_the_deadline() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(FetchError):
            fetch(f"http://127.0.0.1:{port}/metrics", 0.3, 1024, "text/plain")
        assert time.monotonic() - started < 1.3
    finally:
        listener.close()


def test_huge_bodies_are_refused_with_or_without_a_length() -> None:
    big = b"# filler\n" * 20000  # 180 kB
    with engine() as server:
        server.routes["/metrics"] = answer(big)
        with pytest.raises(FetchError, match="larger than"):
            fetch(server.url + "/metrics", 2, 64 * 1024, "text/plain")

        def chunked(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("transfer-encoding", "chunked")
            handler.end_headers()
            try:
                for _ in range(50):
                    handler.wfile.write(b"1000\r\n" + b"#" * 4096 + b"\r\n")
                handler.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass

        server.routes["/metrics"] = chunked
        with pytest.raises(FetchError, match="larger than"):
            fetch(server.url + "/metrics", 2, 64 * 1024, "text/plain")


def test_redirects_are_not_followed() -> None:
    with engine() as server:
        server.routes["/metrics"] = answer(b"", 302, {"location": "http://example.com/"})
        with pytest.raises(FetchError, match="redirect not followed"):
            fetch(server.url + "/metrics", 2, 1024, "text/plain")
        assert server.hits == ["/metrics"]


def test_failures_give_engine_up_0_logged_once_and_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="infermeter.engine.fetcher")
    with engine() as server:
        f = fetcher(server.url + "/metrics")
        f.poll_once()
        assert f.snapshot().up is True
        server.routes["/metrics"] = answer(b'vllm:num_requests_waiting{model_name="m 1\n')
        for _ in range(3):
            f.poll_once()
        snap = f.snapshot()
        assert (snap.up, snap.figures, snap.fetch_ok) == (False, (), False)
        server.routes["/metrics"] = answer(VLLM)
        f.poll_once()
        assert f.snapshot().up is True
        url = server.url
    f.poll_once()  # the engine is gone: connection refused
    assert f.snapshot().up is False
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("engine metrics unavailable") == 2  # once per outage
    assert messages.count("engine metrics back") == 1
    reasons = [getattr(r, "reason", "") for r in caplog.records if hasattr(r, "reason")]
    assert "not Prometheus text" in reasons[0]
    assert "Connection" in reasons[1] or "refused" in reasons[1].lower()
    assert url in str([getattr(r, "url", "") for r in caplog.records])


def test_auto_and_a_404_means_no_metrics_not_down(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="infermeter.engine.fetcher")
    with engine() as server:
        server.routes.pop("/metrics")
        auto = fetcher(server.url + "/metrics", auto=True)
        explicit = fetcher(server.url + "/metrics")
        for _ in range(2):
            auto.poll_once()
            explicit.poll_once()
        assert auto.snapshot().up is None  # an Ollama-like upstream: no series at all
        assert explicit.snapshot().up is False  # asked for by URL: that is an outage
        server.routes["/metrics"] = answer(VLLM)
        auto.poll_once()
        assert auto.snapshot().up is True
        server.routes.pop("/metrics")
        auto.poll_once()
        assert auto.snapshot().up is False  # it had metrics: now it is an outage
    assert [r.getMessage() for r in caplog.records].count(
        "the upstream serves no /metrics: no engine metrics (set --engine-metrics)"
    ) == 1


def test_unrecognised_metrics_are_up_without_figures(caplog: pytest.LogCaptureFixture) -> None:
    with engine() as server:
        server.routes["/metrics"] = answer(b"# TYPE node_load1 gauge\nnode_load1 0.5\n")
        f = fetcher(server.url + "/metrics")
        f.poll_once()
        f.poll_once()
    snap = f.snapshot()
    assert (snap.up, snap.engine, snap.figures) == (True, "", ())
    assert [r.getMessage() for r in caplog.records].count(
        "engine metrics not recognised: none re-exported"
    ) == 1


def test_the_thread_polls_on_its_cadence_and_stops() -> None:
    with engine() as server:
        f = fetcher(server.url + "/metrics", interval=0.05)
        f.start()
        deadline = time.monotonic() + 5
        while server.hits.count("/metrics") < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        f.stop()
        assert server.hits.count("/metrics") >= 3
        assert not f._thread.is_alive()


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="infermeter.engine.fetcher")
    seen: list[str | None] = []

    def check(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("authorization"))
        answer(b"", 503)(handler)

    with engine() as server:
        server.routes["/metrics"] = check
        url = server.url.replace("http://", "http://scraper:s%40cret@") + "/metrics"
        f = fetcher(url)
        f.start()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        f.stop()
    assert seen[0] == "Basic c2NyYXBlcjpzQGNyZXQ="  # scraper:s@cret
    assert f.snapshot().up is False
    logged = str([vars(record) for record in caplog.records])
    assert "cret" not in logged
    assert "***@127.0.0.1" in logged
