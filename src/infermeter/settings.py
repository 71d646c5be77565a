"""Settings: one frozen object built from flags > INFERMETER_* env > YAML file > defaults.

This is the only module that reads INFERMETER_* variables. Unknown INFERMETER_* variables are
ignored on purpose: Kubernetes injects service links such as INFERMETER_PORT for a Service
named "infermeter", and those must not stop the sidecar from starting.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from infermeter.yamlfile import YamlFileError, read_yaml

ENV_PREFIX = "INFERMETER_"
MAX_WORKERS = 64
CONFIG_ENV = ENV_PREFIX + "CONFIG"
DEFAULT_POD_RESOURCES_SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")


class SettingsError(Exception):
    """A setting has a bad value; the message names the setting and its source."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(value: object) -> HostPort:
    """Accept HOST:PORT, [IPv6]:PORT and :PORT (all interfaces), as Go exporters do."""
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT")
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:PORT, got {value!r}")
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        if ":" in host:
            raise ValueError(f"IPv6 hosts need brackets, e.g. [::1]:8091, got {value!r}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port_text!r}")
    return HostPort(host, int(port_text))


def _split_list(value: object) -> object:
    """Comma-separated text from flags and env; a YAML list may hold numbers."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(str(item) for item in value)
    return value


class Settings(BaseModel):
    """Everything configurable. Field descriptions feed --help and the README reference."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    listen: HostPort = Field(
        default=HostPort("0.0.0.0", 8090),
        description="Proxy listen address (clients send inference traffic here).",
    )
    upstream: str | None = Field(
        default=None,
        description="Inference server base URL, e.g. http://127.0.0.1:8000. "
        "Unset: no proxy, exporter only.",
    )
    upstream_connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to establish a connection to the upstream."
    )
    upstream_read_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds the upstream may stay silent (before its response or between "
        "bytes of it); 0: no limit. Long queues and slow first tokens need a generous value.",
    )
    upstream_timeout: float = Field(
        default=0.0, ge=0, description="Seconds a whole upstream exchange may take; 0: no limit."
    )
    upstream_pool_size: int = Field(
        default=1024,
        ge=1,
        description="Most connections kept open to the upstream (keep-alive pool), shared "
        "evenly by the workers.",
    )
    workers: int | Literal["auto"] = Field(
        default=1,
        description="Proxy worker processes sharing the listen address (one core each); "
        "auto: the CPUs this container may use (cgroup quota and affinity), at most 16.",
    )
    engine_metrics: str = Field(
        default="auto",
        description="URL of the inference engine's Prometheus /metrics, re-exported as "
        "infermeter_engine_* (queue, KV cache, prefix cache, preemptions). auto: the "
        "upstream's /metrics (nothing without --upstream; an upstream answering 404 is an "
        "engine without metrics); off: none.",
    )
    engine_metrics_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds between fetches of the engine's /metrics; a scrape reads the latest.",
    )
    engine_metrics_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="Seconds one fetch of the engine's /metrics may take in all.",
    )
    engine_metrics_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest engine /metrics body read; a larger one is a failed fetch.",
    )
    engine: Literal["auto", "vllm", "sglang", "tgi", "llamacpp", "triton", "ollama"] = Field(
        default="auto",
        description="Inference engine behind --engine-metrics; auto: recognised from its "
        "metric names. ollama: it has no /metrics, nothing is fetched.",
    )
    upstream_pool_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request may wait for a free upstream connection when the pool "
        "is full; then 503 (counted in infermeter_upstream_pool_timeouts_total).",
    )
    upstream_head_max_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest upstream response head (status line and headers), bytes; larger: 502.",
    )
    request_head_max_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Largest client request head (request line and headers), bytes, on both "
        "ports; larger: 431.",
    )
    request_max_headers: int = Field(
        default=100,
        ge=8,
        description="Most header fields in a client request, on both ports; more: 431.",
    )
    request_header_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client may take to send a whole request head (from the "
        "connection or the request's first byte), on both ports; then 408.",
    )
    request_body_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a client may stay silent while sending a request body; then 408.",
    )
    request_buffer_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Request body bytes held in memory for all requests together (each "
        "request holds up to 8 MiB until its body is complete, then it is sent upstream); "
        "beyond it bodies stream upstream as they arrive. Shared evenly by the workers.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open client connections on the proxy port, shared evenly by the workers "
        "(fewer if a worker's open-file limit would not leave room); more: 503 and close.",
    )
    metrics_max_connections: int = Field(
        default=64,
        ge=1,
        description="Open connections on the metrics port; more: 503 and close.",
    )
    drain_timeout: float = Field(
        default=30.0,
        ge=0,
        description="Seconds in-flight requests may take to finish after SIGTERM.",
    )
    max_models: int = Field(
        default=64,
        ge=1,
        le=10000,
        description="Distinct model label values; further models are counted as _other.",
    )
    attribute: tuple[str, ...] = Field(
        default=(),
        description="NAME=HEADER: label the request, error, token and cost counters with "
        "NAME, valued by the request's HEADER, e.g. team=X-Team (repeatable; "
        "comma-separated in the environment). Missing header: none.",
        json_schema_extra={"repeatable": True, "empty": "(none)"},
    )
    max_attribute_values: int = Field(
        default=32,
        ge=1,
        le=10000,
        description="Distinct values per --attribute label; further values are counted as _other.",
    )
    strip_attribute_headers: bool = Field(
        default=False,
        description="Remove the --attribute headers from requests before forwarding them.",
    )
    prices: Path | None = Field(
        default=None,
        description="YAML file of token prices per model (per million prompt and completion "
        "tokens, one currency): counts infermeter_cost_total. Unset: no cost counters.",
    )
    models: tuple[str, ...] = Field(
        default=(),
        description="Model names that get their own label value (comma-separated); others "
        "are counted as _other. Empty: a model gets one (up to --max-models) once the "
        "upstream has answered it with a 2xx.",
        json_schema_extra={"empty": "(none)"},
    )
    slo_ttft: float | None = Field(
        default=0.45, gt=0, description="Goodput SLO on time to first token, seconds; none: off."
    )
    slo_tpot: float | None = Field(
        default=0.04,
        gt=0,
        description="Goodput SLO on time per output token, seconds; none: off.",
    )
    slo_e2e: float | None = Field(
        default=None, gt=0, description="Goodput SLO on end-to-end latency, seconds; none: off."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP endpoint for traces (and --otlp-metrics), e.g. "
        "http://otel-collector:4318. Unset: tracing is on only if the standard "
        "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT variables are set.",
    )
    trace_sample_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Fraction of new traces sampled; a sampled or unsampled incoming "
        "traceparent decides for its own request (parent-based).",
    )
    otlp_metrics: bool = Field(
        default=False,
        description="Also export the GenAI OpenTelemetry metrics (gen_ai.client.*) over OTLP.",
    )
    capture_content: bool = Field(
        default=False,
        description="Put prompt and completion text on spans (opt-in: they may hold personal "
        "data). Never logged, never in metrics.",
    )
    capture_content_max_bytes: int = Field(
        default=4096, ge=1, description="Bytes of prompt and of completion kept per span."
    )
    metrics_listen: HostPort = Field(
        default=HostPort("0.0.0.0", 8091),
        description="Address of /metrics, /healthz and /readyz.",
    )
    metrics_tls_cert_file: Path | None = Field(
        default=None, description="Serve the metrics port over TLS with this PEM certificate."
    )
    metrics_tls_key_file: Path | None = Field(
        default=None, description="PEM private key for --metrics-tls-cert-file."
    )
    metrics_basic_auth_username: str | None = Field(
        default=None,
        description="Require HTTP basic auth on /metrics with this user "
        "(Prometheus scrape config basic_auth).",
    )
    metrics_basic_auth_password_file: Path | None = Field(
        default=None, description="File holding the basic-auth password."
    )
    metrics_bearer_token_file: Path | None = Field(
        default=None,
        description="Require this bearer token on /metrics (Prometheus scrape config "
        "authorization.credentials_file). /healthz and /readyz stay open for probes.",
    )
    log_format: Literal["plain", "json"] = Field(
        default="plain", description="One line per event: plain key=value text or JSON."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
    gpu_metrics: bool = Field(default=True, description="Poll NVML for GPU metrics.")
    gpu_poll_interval: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds between NVML polls; a scrape reads the latest poll.",
    )
    gpus: tuple[str, ...] = Field(
        default=(),
        description="GPUs to export, by index or UUID (comma-separated). Empty: all. "
        "Selecting a GPU selects its MIG devices.",
    )
    dcgm_compat: bool = Field(
        default=False,
        description="Also export dcgm-exporter's default GPU metrics under its names, units "
        "and labels (DCGM_FI_DEV_*), for dashboards and alerts written for dcgm-exporter.",
    )
    kubelet_pod_resources: Path | None = Field(
        default=DEFAULT_POD_RESOURCES_SOCKET,
        description="The kubelet's pod-resources socket: GPU and MIG series gain namespace, "
        "pod and container of the container holding the device (DaemonSet mode). The default "
        "is used only where its directory exists; `off` disables.",
    )
    kubelet_pod_resources_interval: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds between the kubelet pod-resources List calls (off the scrape "
        "path; a call's timeout is this, at most 5 s).",
    )
    watch_pid: int | None = Field(
        default=None, gt=0, description="PID of the inference server to report process metrics for."
    )
    watch_process: str | None = Field(
        default=None,
        min_length=1,
        description="Name of the inference server process (process name, executable basename "
        "or a command-line argument) to report process metrics for.",
    )

    @field_validator("listen", "metrics_listen", mode="before")
    @classmethod
    def _host_port(cls, value: object) -> HostPort:
        return parse_host_port(value)

    @field_validator("upstream", "otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if parts.query or parts.fragment:
            raise ValueError(f"URL must not have a query or fragment, got {value!r}")
        return value.rstrip("/")

    @field_validator(
        "slo_ttft",
        "slo_tpot",
        "slo_e2e",
        "upstream",
        "otlp_endpoint",
        "kubelet_pod_resources",
        "prices",
        mode="before",
    )
    @classmethod
    def _none(cls, value: object) -> object:
        """`none` or `off` switches an optional setting off from flags and env."""
        if isinstance(value, str) and value.strip().lower() in ("none", "off", ""):
            return None
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "auto":
                return "auto"
            if not text.isdigit():
                raise ValueError(f"expected a number of workers or auto, got {value!r}")
            value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
            raise ValueError(f"expected 1-{MAX_WORKERS} or auto, got {value!r}")
        return value

    @field_validator("engine_metrics", mode="before")
    @classmethod
    def _engine_metrics(cls, value: object) -> object:
        """auto, off (none, empty) or an http(s) URL without a fragment."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("auto", "off", "none", ""):
            return "off" if text.lower() in ("off", "none", "") else "auto"
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ValueError(f"expected auto, off or an http(s):// URL, got {value!r}")
        try:
            _ = parts.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        return text

    @field_validator("engine", mode="before")
    @classmethod
    def _engine_name(cls, value: object) -> object:
        return value.strip().lower().replace(".", "") if isinstance(value, str) else value

    @field_validator("gpus", "models", mode="before")
    @classmethod
    def _gpus_list(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("attribute", mode="before")
    @classmethod
    def _attribute_list(cls, value: object) -> object:
        """A list (flags, YAML), comma-separated text (env) or a YAML mapping NAME: HEADER."""
        if isinstance(value, Mapping):
            return tuple(f"{name}={header}" for name, header in value.items())
        return _split_list(value)

    @field_validator("attribute")
    @classmethod
    def _attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from infermeter.attribution import parse_attributes

        return tuple(a.spec for a in parse_attributes(value))

    @field_validator("prices")
    @classmethod
    def _prices(cls, value: Path | None) -> Path | None:
        from infermeter.prices import load

        if value is not None:
            load(value)  # PricesError is a ValueError: reported naming the setting
        return value

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not (item.isdigit() or item.startswith(("GPU-", "MIG-"))):
                raise ValueError(f"expected a GPU index or a GPU-/MIG- UUID, got {item!r}")
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "metrics_tls_cert_file",
        "metrics_tls_key_file",
        "metrics_basic_auth_password_file",
        "metrics_bearer_token_file",
    )
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        if value is not None and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if (self.metrics_tls_cert_file is None) != (self.metrics_tls_key_file is None):
            raise ValueError("metrics_tls_cert_file and metrics_tls_key_file go together")
        if (self.metrics_basic_auth_username is None) != (
            self.metrics_basic_auth_password_file is None
        ):
            raise ValueError(
                "metrics_basic_auth_username and metrics_basic_auth_password_file go together"
            )
        if self.watch_pid is not None and self.watch_process is not None:
            raise ValueError("watch_pid and watch_process are mutually exclusive")
        if self.upstream is not None and self.listen.port == self.metrics_listen.port:
            raise ValueError("listen and metrics_listen must use different ports")
        return self


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def read_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Values of known settings from INFERMETER_* variables; empty strings count as unset."""
    out = {}
    for field in Settings.model_fields:
        value = environ.get(env_name(field))
        if value is not None and value.strip() != "":
            out[field] = value
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path)
    except YamlFileError as exc:
        raise SettingsError(f"config: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config: {path} must hold a mapping of settings")
    normalised = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(normalised) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(f"config: unknown setting {unknown[0]!r} in {path}")
    return normalised


def load_settings(
    cli: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Settings:
    """Merge the sources in precedence order and validate once; raise SettingsError."""
    environ = os.environ if environ is None else environ
    config_path = config_path or environ.get(CONFIG_ENV) or None
    sources: dict[str, str] = {}
    merged: dict[str, Any] = {}
    if config_path:
        for key, value in read_config_file(Path(config_path)).items():
            merged[key] = value
            sources[key] = f"config file {config_path} key {key}"
    for key, value in read_env(environ).items():
        merged[key] = value
        sources[key] = env_name(key)
    for key, value in cli.items():
        merged[key] = value
        sources[key] = flag_name(key)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, merged, sources)) from None


def _describe(exc: ValidationError, merged: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    error = exc.errors()[0]
    field = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not field:
        return f"invalid settings: {message}"
    source = sources.get(field, "default")
    return f"invalid setting {field} ({source}={merged.get(field)!r}): {message}"
