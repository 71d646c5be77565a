"""Traces of the real sidecar, exported over OTLP/HTTP to a receiver in the test.

They run the sidecar in-process (`run_inprocess`: real supervisor and workers, each with its
own OpenTelemetry providers and exporters), but for two that need a process:
- test_standard_otel_environment_alone_turns_tracing_on: the standard OTEL_* variables are
  the process's environment (read from os.environ, as is OTEL_SERVICE_NAME);
- test_unreachable_collector_does_not_hold_the_exit: the exit code and time after SIGTERM,
  and no second, unbounded flush at interpreter exit, are the process's.
The demo upstream runs on a thread of the test process too (`inprocess_demo_upstream`): the
tests only bound its delays from below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from harness import http_client
from harness.inprocess import inprocess_demo_upstream, run_inprocess
from harness.otlp_receiver import Receiver, attributes, otlp_receiver
from harness.sidecar import free_port, run_sidecar, wait_for
from harness.upstream import Script, scripted_upstream, sse

pytestmark = pytest.mark.e2e
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
CHAT = "/v1/chat/completions"
CANARY = "canary-secret-prompt-91c4"
BODY = {
    "model": "traced",
    "stream": True,
    "max_tokens": 4,
    "messages": [{"role": "user", "content": CANARY}],
    "stream_options": {"include_usage": True},
}
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_CLIENT
ERROR = 2  # Status.STATUS_CODE_ERROR


def spans_of(receiver: Receiver, count: int = 1) -> list[Any]:
    return wait_for(lambda: receiver.spans() if len(receiver.spans()) >= count else None)


def test_span_follows_genai_conventions_and_joins_the_trace(tmp_path: Path) -> None:
    headers = {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "x-demo-ttft": "0.01"}
    with scripted_upstream() as recorder_upstream, otlp_receiver() as receiver:
        del recorder_upstream
        with (
            inprocess_demo_upstream() as upstream,
            run_inprocess(
                tmp_path,
                "--no-gpu-metrics",
                "--otlp-endpoint",
                receiver.url,
                upstream=upstream,
                env=FAST_EXPORT,
            ) as sidecar,
        ):
            response = http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers=headers)
            assert response.status_code == 200
            (span,) = spans_of(receiver)
    attrs = attributes(span)
    assert span.name == "chat traced"
    assert span.kind == CLIENT
    assert span.trace_id.hex() == PARENT_TRACE
    assert span.parent_span_id.hex() == PARENT_SPAN
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "traced"
    assert attrs["gen_ai.response.model"] == "traced"
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == 4
    assert attrs["gen_ai.usage.input_tokens"] >= 1
    assert attrs["gen_ai.response.finish_reasons"] == ["length"]
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0.009
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["server.port"] == int(upstream.rsplit(":", 1)[1])
    assert attrs["http.request.method"] == "POST"
    assert attrs["http.response.status_code"] == 200
    assert "error.type" not in attrs
    assert [event.name for event in span.events] == ["gen_ai.first_token"]
    assert span.start_time_unix_nano < span.events[0].time_unix_nano < span.end_time_unix_nano
    assert CANARY not in str(span)  # no content without the opt-in


def test_upstream_receives_the_new_context(tmp_path: Path) -> None:
    with scripted_upstream() as upstream, otlp_receiver() as receiver:
        upstream.script(CHAT, Script([(0, sse("[DONE]"))]))
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url,
            upstream=upstream.url, env=FAST_EXPORT,
        ) as sidecar:  # fmt: skip
            http_client.post(
                sidecar.proxy_url + CHAT,
                json=BODY,
                headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01", "tracestate": "k=v"},
            )
            (span,) = spans_of(receiver)
    seen = upstream.seen[0].headers
    assert seen["traceparent"] == f"00-{PARENT_TRACE}-{span.span_id.hex()}-01"
    assert seen["tracestate"] == "k=v"


@pytest.mark.parametrize(
    ("script", "error_type"),
    [
        (
            Script([(0, b"{}")], status=429, headers={"content-type": "application/json"}),
            "upstream_http_4xx",
        ),
        (
            Script([(0, b"oops")], status=503, headers={"content-type": "text/plain"}),
            "upstream_http_5xx",
        ),
        (Script([(0, sse('{"error":{"message":"boom"}}', "[DONE]"))]), "stream_error"),
        (
            Script([(0, sse('{"choices":[{"index":0,"delta":{"content":"x"}}]}'))]),
            "stream_truncated",
        ),
        (Script(head_delay=30), "upstream_timeout"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_error_spans(tmp_path: Path, script: Script, error_type: str) -> None:
    with scripted_upstream() as upstream, otlp_receiver() as receiver:
        upstream.script(CHAT, script)
        with run_inprocess(
            tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url,
            "--upstream-read-timeout", "0.5", upstream=upstream.url, env=FAST_EXPORT,
        ) as sidecar:  # fmt: skip
            http_client.post(sidecar.proxy_url + CHAT, json=BODY, timeout=10)
            (span,) = spans_of(receiver)
    assert attributes(span)["error.type"] == error_type
    assert span.status.code == ERROR


def test_upstream_unreachable_is_an_error_span(tmp_path: Path) -> None:
    with otlp_receiver() as receiver, run_inprocess(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url,
        upstream=f"http://127.0.0.1:{free_port()}", env=FAST_EXPORT,
    ) as sidecar:  # fmt: skip
        assert http_client.post(sidecar.proxy_url + CHAT, json=BODY).status_code == 502
        (span,) = spans_of(receiver)
    assert attributes(span)["error.type"] == "upstream_connect"
    assert attributes(span)["http.response.status_code"] == 502
    assert span.status.code == ERROR


@pytest.mark.parametrize("workers", ["1", "2"])
def test_exemplars_link_histograms_to_exported_traces(tmp_path: Path, workers: str) -> None:
    """Exemplars survive the hand-over and the merge of several workers' histograms."""
    names = (
        "infermeter_time_to_first_token_seconds",
        "infermeter_inter_token_latency_seconds",
        "infermeter_request_duration_seconds",
    )
    with otlp_receiver() as receiver, inprocess_demo_upstream() as upstream, run_inprocess(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url, "--workers", workers,
        upstream=upstream, env=FAST_EXPORT,
    ) as sidecar:  # fmt: skip
        for _ in range(6):
            with http_client.Client() as client:  # a new connection each: any worker may take it
                client.post(sidecar.proxy_url + CHAT, json=BODY, headers={"x-demo-ttft": "0.01"})
        spans = spans_of(receiver, 6)

        def exemplars() -> dict[str, set[str]] | None:
            text = sidecar.get("/metrics", Accept="application/openmetrics-text; version=1.0.0")
            found: dict[str, set[str]] = {}
            for family in text_string_to_metric_families(text.text):
                for sample in family.samples:
                    if sample.exemplar is not None:
                        found.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
            return found if all(found.get(name) for name in names) else None

        found = wait_for(exemplars, what="exemplars on every histogram")
    traces = {span.trace_id.hex() for span in spans}
    for name in names:
        assert found[name] <= traces


def test_content_capture_is_opt_in_and_truncated(tmp_path: Path) -> None:
    with otlp_receiver() as receiver, inprocess_demo_upstream() as upstream, run_inprocess(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url, "--capture-content",
        "--capture-content-max-bytes", "300", upstream=upstream, env=FAST_EXPORT,
    ) as sidecar:  # fmt: skip
        http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers={"x-demo-ttft": "0.01"})
        (span,) = spans_of(receiver)
        metrics_text = sidecar.metrics()
    attrs = attributes(span)
    assert CANARY in attrs["gen_ai.input.messages"]
    assert "data: " in attrs["gen_ai.output.messages"]
    assert len(attrs["gen_ai.output.messages"].encode()) <= 300
    assert CANARY not in metrics_text
    assert CANARY not in sidecar.log()


def test_sampling_ratio_zero_still_follows_a_sampled_parent(tmp_path: Path) -> None:
    parent = {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    with otlp_receiver() as receiver, inprocess_demo_upstream() as upstream, run_inprocess(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url,
        "--trace-sample-ratio", "0", upstream=upstream, env=FAST_EXPORT,
    ) as sidecar:  # fmt: skip
        fast = {"x-demo-ttft": "0"}
        http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers=fast)
        http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers={**fast, **parent})
        http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers=fast)
        (span,) = spans_of(receiver)
        sidecar.handed_over()  # the workers' figures of those requests
        text = sidecar.get("/metrics", Accept="application/openmetrics-text; version=1.0.0").text
    assert span.trace_id.hex() == PARENT_TRACE
    exemplars = {
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.exemplar is not None
    }
    assert exemplars == {PARENT_TRACE}  # only the sampled request left exemplars


def test_standard_otel_environment_alone_turns_tracing_on(tmp_path: Path) -> None:
    with otlp_receiver() as receiver, inprocess_demo_upstream() as upstream:
        env = {
            **FAST_EXPORT,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "gw",
        }
        with run_sidecar(tmp_path, "--no-gpu-metrics", upstream=upstream, env=env) as sidecar:
            http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers={"x-demo-ttft": "0"})
            spans_of(receiver)
    resource = receiver.traces[0].resource_spans[0].resource
    assert attributes(resource)["service.name"] == "gw"


def test_otlp_metrics_use_genai_names(tmp_path: Path) -> None:
    with otlp_receiver() as receiver, inprocess_demo_upstream() as upstream, run_inprocess(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", receiver.url, "--otlp-metrics",
        upstream=upstream, env=FAST_EXPORT,
    ) as sidecar:  # fmt: skip
        http_client.post(sidecar.proxy_url + CHAT, json=BODY, headers={"x-demo-ttft": "0.01"})
        wanted = {
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
            "gen_ai.client.operation.time_per_output_chunk",
            "gen_ai.client.token.usage",
        }
        wait_for(lambda: wanted <= receiver.metric_names(), what="gen_ai metrics")
    usage = [
        point
        for request in receiver.metrics
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "gen_ai.client.token.usage"
        for point in metric.histogram.data_points
    ]
    types = {attributes(point)["gen_ai.token.type"] for point in usage}
    assert types == {"input", "output"}
    assert all(attributes(p)["gen_ai.request.model"] == "traced" for p in usage)
    assert all(attributes(p)["gen_ai.provider.name"] == "openai" for p in usage)


def test_unreachable_collector_does_not_hold_the_exit(tmp_path: Path) -> None:
    """SIGTERM with spans the collector never takes: the worker hands its figures over
    first, gives the exporter a bounded time, and the sidecar exits 0 (the SDK alone would
    retry with backoff for seconds, and again at exit)."""
    with inprocess_demo_upstream() as upstream, run_sidecar(
        tmp_path, "--no-gpu-metrics", "--otlp-endpoint", f"http://127.0.0.1:{free_port()}",
        upstream=upstream, env={"OTEL_BSP_SCHEDULE_DELAY": "60000"},  # held until shutdown
    ) as sidecar:  # fmt: skip
        assert http_client.post(sidecar.proxy_url + CHAT, json=BODY).status_code == 200
        assert sidecar.stop() == 0
        log = sidecar.log()
    assert "OTLP export unfinished at shutdown" in log
    assert log.count("OTLP export unfinished at shutdown") == 1  # no second, unbounded flush
