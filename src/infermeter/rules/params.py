"""Every tunable of the rules, with the defaults the checked-in files use."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Params:
    # windows (Prometheus durations)
    rate_window: str = "5m"  # p50/p90/p99 and rates
    baseline_window: str = "1d"  # the "normal" a p99 is compared with
    baseline_offset: str = "1h"  # keeps the current incident out of its own baseline
    baseline_min_samples: int = 120  # recorded p99 samples with traffic: 1 h at a 30 s
    # evaluation interval (or 2 h at 1 m); fewer and the model is "too new" for a baseline
    # 2x-baseline latency alerts
    multiplier: float = 2.0
    baseline_for: str = "10m"
    min_request_rate: float = 0.05  # requests/s: below it, a p99 is a few requests
    min_ttft_seconds: float = 0.1  # absolute floors: 2x of a tiny p99 is still tiny
    min_itl_seconds: float = 0.01
    min_e2e_seconds: float = 1.0
    # static SLO fallback, for models too new to have a baseline
    slo_ttft_seconds: float = 2.0
    slo_itl_seconds: float = 0.2
    slo_e2e_seconds: float = 60.0
    slo_for: str = "10m"
    # errors and traffic
    error_ratio: float = 0.05
    error_for: str = "5m"
    unreachable_for: str = "2m"
    stuck_for: str = "15m"
    # GPU and sidecar health
    gpu_lost_for: str = "1m"
    nvml_down_for: str = "10m"
    gpu_temperature_celsius: float = 85.0
    gpu_temperature_for: str = "5m"
    throttle_for: str = "10m"
    gpu_memory_ratio: float = 0.98  # vLLM reserves ~90% by design; this is "truly full"
    gpu_memory_for: str = "15m"
    event_window: str = "10m"  # XID / ECC: new events within
    loop_lag_seconds: float = 0.05
    loop_lag_for: str = "10m"
    target_down_for: str = "5m"
    job_selector: str = 'job=~".*infermeter.*"'
    # engine saturation (the engine's own /metrics, re-exported as infermeter_engine_*)
    engine_kv_cache_ratio: float = 0.95  # KV cache this full, with a queue: saturated
    engine_saturated_for: str = "5m"
    engine_down_for: str = "10m"  # longer than an engine's start-up (weights loading)
    # cost
    gpu_hourly_price: float = 2.5  # currency units per GPU-hour
    # spend (--prices, --attribute): recorded per each of these labels and per model
    attribution_labels: tuple[str, ...] = ("team", "feature")
    budget_label: str = "team"  # monthly budgets are per value of this label
    budgets: dict[str, float] = field(default_factory=dict)  # value -> monthly budget
    currency: str = "USD"  # of the budgets (must match the prices file's)
    budget_for: str = "5m"
    forecast_window: str = "6h"  # "the current rate" of the forecast
    forecast_for: str = "1h"
    month_to_date_interval: str = "1m"  # evaluation interval of the month-to-date chain
    month_to_date_lookback: str = "1d"  # how far back the chain finds its previous value: a
    # longer Prometheus outage restarts the month's total; longer is costlier every minute
    # availability SLO: multi-window, multi-burn-rate alerts (SRE workbook, ch. 5)
    availability_objective: float = 0.999
    availability_window: str = "30d"
    availability_error_types: str = (
        "upstream_connect|upstream_timeout|upstream_http_5xx|stream_error|stream_truncated"
    )
    availability_error_codes: str = "429"  # statuses also counted as errors ("": none)
    burn_page_for: str = "2m"
    burn_ticket_for: str = "15m"
    runbook_url: str = (
        "https://github.com/infermeter/infermeter/blob/main/deploy/prometheus/runbook.md"
    )
    labels: dict[str, str] = field(default_factory=dict)  # extra labels on every alert
    # multi-cluster (Thanos, Mimir, a central ruler): this label is added to every grouping
    # and join, so clusters with the same namespace, pod and model stay apart; "": none
    cluster_label: str = ""

    def by(self, labels: str) -> str:
        """A PromQL label list (`namespace, model`) with the cluster label in front, if any."""
        return f"{self.cluster_label}, {labels}" if self.cluster_label else labels
