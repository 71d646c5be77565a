"""Whether the standard OpenTelemetry variables ask for tracing: light, so that a proxy
worker with tracing off never imports the OpenTelemetry SDK (~10 MB per process)."""

from __future__ import annotations

from collections.abc import Mapping


def enabled_by_environment(environ: Mapping[str, str]) -> bool:
    """The standard variables alone switch tracing on, as in any OpenTelemetry SDK."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").lower() == "none":
        return False
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
