"""OpenTelemetry: one CLIENT span per proxied request (GenAI semantic conventions), trace
context continued from the client and passed to the upstream, trace-linked exemplars, and
optional OTLP metrics under the GenAI metric names.

Off by default, and then nothing here runs per request: the proxy holds `None` instead of
a `Tracing` and never creates a span object.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

from infermeter import __version__
from infermeter.otel_env import enabled_by_environment
from infermeter.streams.api import Api
from infermeter.streams.timing import RequestRecord

if TYPE_CHECKING:  # the worker gets a WorkerConfig, not the pydantic model
    from infermeter.settings import Settings
    from infermeter.worker_config import WorkerConfig

# (gen_ai.operation.name, gen_ai.provider.name) by wire format. OpenAI-compatible servers
# (vLLM, SGLang, llama.cpp, TGI's Messages API) speak the OpenAI format, and the semantic
# conventions key the provider on the telemetry flavour, so they are "openai".
OPERATIONS: dict[Api, tuple[str, str]] = {
    Api.CHAT_COMPLETIONS: ("chat", "openai"),
    Api.COMPLETIONS: ("text_completion", "openai"),
    Api.RESPONSES: ("chat", "openai"),
    Api.ANTHROPIC_MESSAGES: ("chat", "anthropic"),
    Api.TGI_GENERATE: ("text_completion", "tgi"),
    Api.OLLAMA_GENERATE: ("text_completion", "ollama"),
    Api.OLLAMA_CHAT: ("chat", "ollama"),
}
# Bucket boundaries the GenAI conventions recommend (duration, token usage); the chunk
# timings use those of the server-side TTFT / time-per-output-token metrics.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
FIRST_CHUNK_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
PER_CHUNK_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


@dataclass(frozen=True, slots=True)
class TracingConfig:
    endpoint: str | None  # OTLP/HTTP base URL; None: the standard OTEL_* variables decide
    sample_ratio: float
    metrics: bool
    capture_content: bool
    capture_max_bytes: int


def _signal_url(endpoint: str | None, signal: str) -> str | None:
    return None if endpoint is None else endpoint.rstrip("/") + "/v1/" + signal


#: How long a stopping worker waits for the collector to take its last spans and metrics.
SHUTDOWN_SECONDS = 2.0


class Tracing:
    """The SDK objects, built once; `start()` is the only per-request entry."""

    def __init__(self, config: TracingConfig, upstream: str) -> None:
        self.config = config
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", "infermeter")}
        )
        # shutdown_on_exit=False: `shutdown()` below bounds the flush; the SDK's own atexit
        # hook would flush again, unbounded, after it gave up.
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
            shutdown_on_exit=False,
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=_signal_url(config.endpoint, "traces")))
        )
        self.tracer = self.provider.get_tracer("infermeter", __version__)
        self.propagator = get_global_textmap()
        parts = urlsplit(upstream)
        self.server_address = parts.hostname or ""
        self.server_port = parts.port or (443 if parts.scheme == "https" else 80)
        self.metrics: GenAiMetrics | None = None
        self.meter_provider: MeterProvider | None = None
        if config.metrics:
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=_signal_url(config.endpoint, "metrics"))
            )
            self.meter_provider = MeterProvider(
                resource=resource, metric_readers=[reader], shutdown_on_exit=False
            )
            self.metrics = GenAiMetrics(self.meter_provider)

    def start(self, headers: Iterable[tuple[bytes, bytes]], method: str, api: Api) -> RequestTrace:
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name.lower() in _TRACE_HEADERS
        }
        parent = self.propagator.extract(carrier) if carrier else None
        operation = OPERATIONS.get(api)
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": self.server_address,
            "server.port": self.server_port,
        }
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation[0]
            attributes["gen_ai.provider.name"] = operation[1]
        span = self.tracer.start_span(
            operation[0] if operation else method,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=time.time_ns(),
        )
        return RequestTrace(self, span, operation, api)

    def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """Flush the last spans and metrics, for at most `timeout` seconds; False when the
        collector did not take them in time. An unreachable collector makes the exporter
        retry with backoff for up to its own 10 s, which must not hold a terminating pod
        (nor the worker's last hand-over): what is left is dropped, with one warning."""
        flush = threading.Thread(target=self._shutdown, name="infermeter-otel-flush", daemon=True)
        flush.start()
        flush.join(timeout)
        if flush.is_alive():
            logging.getLogger(__name__).warning(
                "OTLP export unfinished at shutdown: the last spans are dropped",
                extra={"timeout": timeout, "endpoint": self.config.endpoint or "from OTEL_*"},
            )
            return False
        return True

    def _shutdown(self) -> None:
        self.provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


class GenAiMetrics:
    """gen_ai.client.* instruments, for teams on an OpenTelemetry metrics pipeline."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("infermeter", __version__)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", "s", "GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )  # fmt: skip
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time to receive the first output chunk of a streaming response.",
            explicit_bucket_boundaries_advisory=FIRST_CHUNK_BUCKETS,
        )  # fmt: skip
        self.per_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk", "s",
            "Time from the previous output chunk to this one, streaming responses only.",
            explicit_bucket_boundaries_advisory=PER_CHUNK_BUCKETS,
        )  # fmt: skip
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )  # fmt: skip


class RequestTrace:
    """One request's span and what it needs until the request ends."""

    __slots__ = ("_api", "_attrs", "_content", "_operation", "_tracing", "exemplar", "span")

    def __init__(
        self, tracing: Tracing, span: Any, operation: tuple[str, str] | None, api: Api
    ) -> None:
        self._tracing = tracing
        self._operation = operation
        self._api = api
        self._content = bytearray() if tracing.config.capture_content else None
        self._attrs: dict[str, Any] = {}
        self.span = span
        context = span.get_span_context()
        self.exemplar: dict[str, str] | None = (
            {
                "trace_id": format(context.trace_id, "032x"),
                "span_id": format(context.span_id, "016x"),
            }
            if context.trace_flags.sampled
            else None
        )

    def request(self, model: str | None, model_label: str, stream: bool, body: bytes) -> None:
        """What the request body told us: name the span `{operation} {model}`."""
        span = self.span
        if self._operation is not None:
            span.update_name(f"{self._operation[0]} {model}" if model else self._operation[0])
            if model:
                span.set_attribute("gen_ai.request.model", model)
            span.set_attribute("gen_ai.request.stream", stream)
        self._attrs = {
            "server.address": self._tracing.server_address,
            "server.port": self._tracing.server_port,
            "gen_ai.request.model": model_label,
        }
        if self._operation is not None:
            self._attrs["gen_ai.operation.name"] = self._operation[0]
            self._attrs["gen_ai.provider.name"] = self._operation[1]
        if self._content is not None:
            limit = self._tracing.config.capture_max_bytes
            span.set_attribute("gen_ai.input.messages", _text(_input_of(body), limit))

    def relabel(self, model_label: str) -> None:
        """The model earned its own label (its first 2xx): the OTLP metrics follow."""
        if self._attrs:
            self._attrs["gen_ai.request.model"] = model_label

    def upstream_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The outgoing headers with this span's context in place of the client's."""
        carrier: dict[str, str] = {}
        self._tracing.propagator.inject(
            carrier, context=trace.set_span_in_context(self.span, Context())
        )
        kept = [(n, v) for n, v in headers if n not in ("traceparent", "tracestate", "baggage")]
        return kept + list(carrier.items())

    def response_bytes(self, chunk: bytes) -> None:
        """Keep the response for content capture (opt-in only), up to the configured size."""
        if (
            self._content is not None
            and len(self._content) < self._tracing.config.capture_max_bytes
        ):
            self._content += chunk

    @property
    def capturing(self) -> bool:
        return self._content is not None

    def gap(self, gap: float) -> None:
        metrics = self._tracing.metrics
        if metrics is not None:
            metrics.per_chunk.record(gap, self._attrs)

    def finish(
        self, status: int, error_type: str | None, record: RequestRecord | None, e2e: float
    ) -> None:
        span = self.span
        start: int = span.start_time
        span.set_attribute("http.response.status_code", status)
        if record is not None:
            _record_attributes(span, record)
            if record.ttft is not None:
                span.add_event(
                    "gen_ai.first_token",
                    {"gen_ai.response.time_to_first_chunk": record.ttft},
                    timestamp=start + int(record.ttft * 1e9),
                )
        if error_type is not None:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        if self._content is not None:
            limit = self._tracing.config.capture_max_bytes
            span.set_attribute("gen_ai.output.messages", _text(bytes(self._content), limit))
        metrics = self._tracing.metrics
        if metrics is not None:
            attrs = dict(self._attrs)
            if error_type is not None:
                attrs["error.type"] = error_type
            if record is not None and record.response_model:
                attrs["gen_ai.response.model"] = record.response_model
            metrics.duration.record(e2e, attrs)
            if record is not None:
                if record.ttft is not None:
                    metrics.first_chunk.record(record.ttft, attrs)
                if record.prompt_tokens is not None:
                    metrics.tokens.record(
                        record.prompt_tokens, {**attrs, "gen_ai.token.type": "input"}
                    )
                output = record.completion_tokens
                if output is None:
                    output = record.completion_tokens_estimated
                if output is not None:
                    metrics.tokens.record(output, {**attrs, "gen_ai.token.type": "output"})
        span.end(end_time=start + int(e2e * 1e9))


def _record_attributes(span: Any, record: RequestRecord) -> None:
    if record.response_model:
        span.set_attribute("gen_ai.response.model", record.response_model)
    if record.ttft is not None:
        span.set_attribute("gen_ai.response.time_to_first_chunk", record.ttft)
    if record.prompt_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", record.prompt_tokens)
    if record.completion_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", record.completion_tokens)
    if record.finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", list(record.finish_reasons))


def _input_of(body: bytes) -> bytes:
    """The messages (or prompt / input) of a request, else the body itself."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        for key in ("messages", "prompt", "input", "inputs"):
            if key in doc:
                return json.dumps(doc[key], ensure_ascii=False).encode()
    return body


def _text(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", "replace")


def make_tracing(settings: Settings | WorkerConfig, upstream: str) -> Tracing | None:
    """Tracing is off unless asked for, by our flag or by the standard OTEL_* variables."""
    if settings.otlp_endpoint is None and not enabled_by_environment(os.environ):
        return None
    config = TracingConfig(
        endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
        metrics=settings.otlp_metrics,
        capture_content=settings.capture_content,
        capture_max_bytes=settings.capture_content_max_bytes,
    )
    logging.getLogger(__name__).info(
        "tracing on",
        extra={"endpoint": settings.otlp_endpoint or "from OTEL_* environment",
               "sample_ratio": settings.trace_sample_ratio},
    )  # fmt: skip
    return Tracing(config, upstream)
