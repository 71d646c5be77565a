"""The metric catalogue: every metric infermeter exports, declared once.

Collectors build their families from these specs, and the README's metric reference is
generated from them, so names, types, help texts and labels cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # imported where used: a proxy worker never needs prometheus_client
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    Family = CounterMetricFamily | GaugeMetricFamily

Kind = Literal["counter", "gauge", "histogram"]
GPU_LABELS = ("gpu", "uuid")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    group: str = "self"
    buckets: tuple[float, ...] = ()

    def family(self, extra_labels: tuple[str, ...] = ()) -> Family:
        """A fresh, empty family for one scrape (custom collectors only)."""
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

        labels = [*self.labels, *extra_labels]
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.help, labels=labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.help, labels=labels)
        raise ValueError(f"{self.name}: histograms are not built per scrape")

    def live(
        self, registry: CollectorRegistry, extra_labels: tuple[str, ...] = ()
    ) -> Counter | Gauge | Histogram:
        """A metric updated as events happen (the proxy's), registered in `registry`.

        `extra_labels`: labels configured at run time (the `--attribute` labels).
        """
        from prometheus_client import Counter, Gauge, Histogram

        labels = (*self.labels, *extra_labels)
        if self.kind == "counter":
            return Counter(self.name, self.help, labels, registry=registry)
        if self.kind == "gauge":
            return Gauge(self.name, self.help, labels, registry=registry)
        return Histogram(self.name, self.help, labels, registry=registry, buckets=self.buckets)


def _gpu(name: str, kind: Kind, help_text: str, *extra: str) -> MetricSpec:
    return MetricSpec(name, kind, help_text, (*GPU_LABELS, *extra), "gpu")


# --- GPU (NVML) -----------------------------------------------------------------------------
NVML_UP = MetricSpec(
    "infermeter_nvml_up", "gauge", "1 when NVML is initialised, 0 when it is not.", (), "gpu"
)
GPU_INFO = MetricSpec(
    "infermeter_gpu_info",
    "gauge",
    "Always 1: identity of each GPU or MIG device (parent_uuid is empty for a full GPU).",
    (*GPU_LABELS, "name", "driver_version", "pci_bus_id", "parent_uuid"),
    "gpu",
)
GPU_UP = _gpu(
    "infermeter_gpu_up",
    "gauge",
    "1 when the GPU answered the last poll; 0 when it is lost or failing "
    "(its other series are then absent).",
)
GPU_UTILIZATION = _gpu(
    "infermeter_gpu_utilization_ratio",
    "gauge",
    "Fraction of the last sample period in which a kernel ran on the GPU (0-1).",
)
GPU_MEMORY_UTILIZATION = _gpu(
    "infermeter_gpu_memory_utilization_ratio",
    "gauge",
    "Fraction of the last sample period in which device memory was read or written (0-1).",
)
GPU_GRAPHICS_ACTIVE = _gpu(
    "infermeter_gpu_graphics_engine_active_ratio",
    "gauge",
    "Fraction of the time between two polls the graphics/compute engine was busy "
    "(NVML GPM, Hopper and later; DCGM's GR_ENGINE_ACTIVE).",
)
GPU_TENSOR_ACTIVE = _gpu(
    "infermeter_gpu_tensor_active_ratio",
    "gauge",
    "Fraction of the time between two polls the SMs ran any tensor-core operation "
    "(NVML GPM, Hopper and later; DCGM's PIPE_TENSOR_ACTIVE).",
)
GPU_MEMORY_USED = _gpu(
    "infermeter_gpu_memory_used_bytes",
    "gauge",
    "Device memory allocated by processes (NVML v2: excludes reserved memory).",
)
GPU_MEMORY_FREE = _gpu("infermeter_gpu_memory_free_bytes", "gauge", "Device memory free.")
GPU_MEMORY_TOTAL = _gpu("infermeter_gpu_memory_total_bytes", "gauge", "Device memory installed.")
GPU_MEMORY_RESERVED = _gpu(
    "infermeter_gpu_memory_reserved_bytes",
    "gauge",
    "Device memory reserved by the driver and firmware (NVML v2 only).",
)
GPU_TEMPERATURE = _gpu("infermeter_gpu_temperature_celsius", "gauge", "GPU core temperature.")
GPU_MEMORY_TEMPERATURE = _gpu(
    "infermeter_gpu_memory_temperature_celsius",
    "gauge",
    "Device memory (HBM) temperature, where the GPU reports it.",
)
GPU_POWER = _gpu("infermeter_gpu_power_watts", "gauge", "Power draw of the GPU board.")
GPU_POWER_LIMIT = _gpu(
    "infermeter_gpu_power_limit_watts", "gauge", "Power limit the driver enforces."
)
GPU_ENERGY = _gpu(
    "infermeter_gpu_energy_joules_total",
    "counter",
    "Energy used by the GPU since the driver was loaded.",
)
GPU_CLOCK = _gpu(
    "infermeter_gpu_clock_hertz",
    "gauge",
    "Current clock frequency, by clock domain (graphics, sm, memory).",
    "clock",
)
GPU_CLOCK_EVENT = _gpu(
    "infermeter_gpu_clock_event_active",
    "gauge",
    "1 while the reason is holding clocks down (throttling), else 0.",
    "reason",
)
GPU_FAN = _gpu(
    "infermeter_gpu_fan_speed_ratio", "gauge", "Fan speed as a fraction of its maximum (0-1)."
)
GPU_PCIE_REPLAYS = _gpu(
    "infermeter_gpu_pcie_replays_total",
    "counter",
    "PCIe replay events (link errors retried) since the driver was loaded.",
)
GPU_ECC_ERRORS = _gpu(
    "infermeter_gpu_ecc_errors_total",
    "counter",
    "ECC memory errors since the driver was loaded (volatile count), by type "
    "(corrected, uncorrected).",
    "type",
)
GPU_REMAPPED_ROWS = _gpu(
    "infermeter_gpu_remapped_rows_total",
    "counter",
    "Memory rows remapped over the GPU's life, by cause (correctable, uncorrectable).",
    "cause",
)
GPU_ROW_REMAP_PENDING = _gpu(
    "infermeter_gpu_row_remap_pending",
    "gauge",
    "1 when a row remap waits for a GPU reset to take effect.",
)
GPU_ROW_REMAP_FAILED = _gpu(
    "infermeter_gpu_row_remap_failed",
    "gauge",
    "1 when a row remap failed: the GPU needs service.",
)
GPU_XID_ERRORS = _gpu(
    "infermeter_gpu_xid_errors_total",
    "counter",
    "XID critical errors reported by the driver since infermeter started, by XID code.",
    "xid",
)

# --- pod attribution (kubelet pod-resources API, DaemonSet mode) ---------------------------
POD_LABELS = ("namespace", "pod", "container")
GPU_POD_INFO = MetricSpec(
    "infermeter_gpu_pod_info",
    "gauge",
    "Always 1: a container the kubelet assigned this GPU or MIG device to (one series per "
    "container, also when several share the device by time slicing).",
    ("uuid", *POD_LABELS),
    "kubelet",
)

# --- inference traffic (the proxy) ---------------------------------------------------------
INFERENCE_LABELS = ("model", "api")
# Latency buckets step by at most 1.5-2x, so any p99 from 5 ms to 600 s is resolved within a
# bucket of its neighbours, and the top sits far above 2x any normal p99 (the 2x alert).
LATENCY_BUCKETS = (
    0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    180.0, 240.0, 300.0, 450.0, 600.0,
)  # fmt: skip
TOKEN_LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03,
    0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip
TOKEN_COUNT_BUCKETS = tuple(float(2**i) for i in range(21))  # 1 to 1,048,576 tokens
LAG_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


def _inference(
    name: str, kind: Kind, help_text: str, *extra: str, buckets: tuple[float, ...] = ()
) -> MetricSpec:
    return MetricSpec(name, kind, help_text, (*INFERENCE_LABELS, *extra), "inference", buckets)


REQUESTS = _inference(
    "infermeter_requests_total",
    "counter",
    "Requests proxied, by the HTTP status sent to the client (499: the client went away first).",
    "code",
)
REQUEST_ERRORS = _inference(
    "infermeter_request_errors_total",
    "counter",
    "Failed requests by error_type: upstream_connect, upstream_timeout, upstream_http_4xx, "
    "upstream_http_5xx, stream_error, stream_truncated, client_disconnect, proxy_internal.",
    "error_type",
)
IN_FLIGHT = _inference(
    "infermeter_requests_in_flight", "gauge", "Requests being proxied right now."
)
TTFB = _inference(
    "infermeter_time_to_first_byte_seconds",
    "histogram",
    "From the request head received to the first response body byte from the upstream.",
    buckets=LATENCY_BUCKETS,
)
TTFT = _inference(
    "infermeter_time_to_first_token_seconds",
    "histogram",
    "Streaming requests: from the request head received to the first event carrying "
    "generated output (content, reasoning, tool-call arguments or refusal).",
    buckets=LATENCY_BUCKETS,
)
ITL = _inference(
    "infermeter_inter_token_latency_seconds",
    "histogram",
    "Gap between consecutive output events; an event of k known tokens counts k "
    "observations of gap/k.",
    buckets=TOKEN_LATENCY_BUCKETS,
)
TPOT = _inference(
    "infermeter_time_per_output_token_seconds",
    "histogram",
    "Per streaming request with 2+ output tokens: (last output - first output) / "
    "(output tokens - 1).",
    buckets=TOKEN_LATENCY_BUCKETS,
)
E2E = _inference(
    "infermeter_request_duration_seconds",
    "histogram",
    "From the request head received to the last byte sent to the client.",
    buckets=LATENCY_BUCKETS,
)
PROMPT_TOKENS = _inference(
    "infermeter_prompt_tokens_total", "counter", "Prompt tokens, from the upstream's usage reports."
)
COMPLETION_TOKENS = _inference(
    "infermeter_completion_tokens_total",
    "counter",
    "Output tokens, from the upstream's usage reports (exact).",
)
COMPLETION_TOKENS_ESTIMATED = _inference(
    "infermeter_completion_tokens_estimated_total",
    "counter",
    "Output events counted for requests whose response carried no usage report (an estimate).",
)
REQUEST_PROMPT_TOKENS = _inference(
    "infermeter_request_prompt_tokens",
    "histogram",
    "Prompt tokens per request (usage reports only).",
    buckets=TOKEN_COUNT_BUCKETS,
)
REQUEST_COMPLETION_TOKENS = _inference(
    "infermeter_request_completion_tokens",
    "histogram",
    "Output tokens per request (usage report, or the event count when there is none).",
    buckets=TOKEN_COUNT_BUCKETS,
)
GOODPUT = _inference(
    "infermeter_goodput_requests_total",
    "counter",
    "Requests that succeeded and met every configured SLO (--slo-ttft, --slo-tpot, --slo-e2e).",
)
COST = _inference(
    "infermeter_cost_total",
    "counter",
    "Spend from exact usage reports and --prices (price per million tokens), in the "
    "currency the currency label names; plus any --attribute labels.",
    "currency",
)
COST_ESTIMATED = _inference(
    "infermeter_cost_estimated_total",
    "counter",
    "Spend of requests whose response carried no usage report, priced from the counted "
    "output events (an estimate, never mixed into infermeter_cost_total).",
    "currency",
)
DRAIN_ABORTED = _inference(
    "infermeter_drain_aborted_requests_total",
    "counter",
    "Requests still open when the drain timeout after SIGTERM ran out; infermeter ended them.",
)
EVENT_LOOP_LAG = MetricSpec(
    "infermeter_event_loop_lag_seconds",
    "histogram",
    "How late each proxy worker's event loop ran a timer: when high, measured latencies are "
    "inflated by the sidecar itself.",
    ("worker",),
    buckets=LAG_BUCKETS,
)

EVENT_LOOP_TASKS = MetricSpec(
    "infermeter_event_loop_tasks",
    "gauge",
    "asyncio tasks alive on each proxy worker's loop (about one per open request): a steady "
    "climb with flat traffic is a leak.",
    ("worker",),
)
WORKER_RESTARTS = MetricSpec(
    "infermeter_worker_restarts_total",
    "counter",
    "Proxy workers that died and were restarted by the supervisor, by worker slot.",
    ("worker",),
)
WORKER_SNAPSHOT_AGE = MetricSpec(
    "infermeter_worker_snapshot_age_seconds",
    "gauge",
    "Seconds since the supervisor last heard from the proxy worker (it hands over a snapshot "
    "every 0.25 s): the proxy figures of this scrape are that old for this worker.",
    ("worker",),
)
WORKERS_READY = MetricSpec(
    "infermeter_workers_ready",
    "gauge",
    "Proxy workers accepting connections (of --workers).",
)

# --- the inference engine's own /metrics (engine saturation) --------------------------------
ENGINE_LABELS = ("model", "engine")


def _engine(name: str, kind: Kind, help_text: str) -> MetricSpec:
    return MetricSpec(name, kind, help_text, ENGINE_LABELS, "engine")


ENGINE_UP = MetricSpec(
    "infermeter_engine_up",
    "gauge",
    "1 when the last fetch of the engine's /metrics parsed, 0 when it failed (its other "
    "engine series are then absent).",
    (),
    "engine",
)
ENGINE_INFO = MetricSpec(
    "infermeter_engine_info",
    "gauge",
    "Always 1: the engine recognised from its metric names, and its version where it says it.",
    ("engine", "version"),
    "engine",
)
ENGINE_REQUESTS_WAITING = _engine(
    "infermeter_engine_requests_waiting",
    "gauge",
    "Requests queued in the engine, not yet scheduled (engine's own figure).",
)
ENGINE_REQUESTS_RUNNING = _engine(
    "infermeter_engine_requests_running",
    "gauge",
    "Requests the engine is running (in its current batch).",
)
ENGINE_KV_CACHE_USAGE = _engine(
    "infermeter_engine_kv_cache_usage_ratio",
    "gauge",
    "Fraction of the engine's KV cache in use (0-1).",
)
ENGINE_PREFIX_CACHE_QUERIES = _engine(
    "infermeter_engine_prefix_cache_queries_total",
    "counter",
    "Prompt tokens looked up in the engine's prefix cache.",
)
ENGINE_PREFIX_CACHE_HITS = _engine(
    "infermeter_engine_prefix_cache_hits_total",
    "counter",
    "Prompt tokens found in the engine's prefix cache.",
)
ENGINE_PREEMPTIONS = _engine(
    "infermeter_engine_preemptions_total",
    "counter",
    "Requests the engine preempted (or retracted) to free KV cache.",
)
HTTP_REJECTED = MetricSpec(
    "infermeter_http_rejected_total",
    "counter",
    "Connections and requests refused by the sidecar's own HTTP limits, by port (listener: "
    "proxy, metrics) and reason (head_too_large, too_many_headers, header_timeout, "
    "body_timeout, connection_limit, bad_host, upgrade_with_body, bad_request).",
    ("listener", "reason"),
)
UPSTREAM_POOL_TIMEOUTS = MetricSpec(
    "infermeter_upstream_pool_timeouts_total",
    "counter",
    "Requests answered 503 because no upstream connection was free within --upstream-pool-timeout.",
)

# --- collectors and the sidecar itself -------------------------------------------------------
COLLECTOR_DURATION = MetricSpec(
    "infermeter_collector_duration_seconds",
    "gauge",
    "How long the collector's last run took (for gpu: the last NVML poll).",
    ("collector",),
)
COLLECTOR_SUCCESS = MetricSpec(
    "infermeter_collector_success",
    "gauge",
    "1 when the collector's last run succeeded.",
    ("collector",),
)
BUILD_INFO = MetricSpec(
    "infermeter_build_info",
    "gauge",
    "Always 1: versions of infermeter, Python and the NVML bindings.",
    ("version", "python_version", "nvml_bindings_version"),
)

# --- processes (psutil) ----------------------------------------------------------------------
_PROC = ("process",)
PROCESS_UP = MetricSpec(
    "infermeter_process_up",
    "gauge",
    "1 when the process is found (process=sidecar is always 1).",
    _PROC,
    "process",
)
PROCESS_CPU = MetricSpec(
    "infermeter_process_cpu_seconds_total",
    "counter",
    "User and system CPU time of the process and its descendants.",
    _PROC,
    "process",
)
PROCESS_RSS = MetricSpec(
    "infermeter_process_resident_memory_bytes",
    "gauge",
    "Resident memory of the process and its descendants (shared pages counted per process).",
    _PROC,
    "process",
)
PROCESS_THREADS = MetricSpec(
    "infermeter_process_threads",
    "gauge",
    "Threads of the process and its descendants.",
    _PROC,
    "process",
)
PROCESS_FDS = MetricSpec(
    "infermeter_process_open_fds",
    "gauge",
    "Open file descriptors of the process and its descendants.",
    _PROC,
    "process",
)

CATALOGUE: tuple[MetricSpec, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, MetricSpec)
)
