"""Rules as data, rendered to the YAML Prometheus loads (rule groups)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from infermeter.rules import availability, cost
from infermeter.rules.params import Params

NM = "namespace, model"


@dataclass(frozen=True, slots=True)
class Latency:
    key: str  # alert name part
    what: str  # for humans
    metric: str
    floor: str  # Params field: minimum absolute p99
    slo: str  # Params field: static fallback threshold

    def p(self, q: int, params: Params) -> str:
        return f"namespace_model:{self.metric}:p{q}_{params.rate_window}"

    def baseline(self, params: Params) -> str:
        return f"{self.p(99, params)}:baseline_{params.baseline_window}"


LATENCIES = (
    Latency("TTFT", "time to first token", "infermeter_time_to_first_token_seconds", "min_ttft_seconds", "slo_ttft_seconds"),
    Latency("ITL", "inter-token latency", "infermeter_inter_token_latency_seconds", "min_itl_seconds", "slo_itl_seconds"),
    Latency("TPOT", "time per output token", "infermeter_time_per_output_token_seconds", "min_itl_seconds", "slo_itl_seconds"),
    Latency("E2E", "end-to-end latency", "infermeter_request_duration_seconds", "min_e2e_seconds", "slo_e2e_seconds"),
)  # fmt: skip


def _rate(metric: str, by: str, params: Params) -> str:
    return f"sum by ({params.by(by)}) (rate({metric}[{params.rate_window}]))"


def _where(params: Params, *labels: str) -> tuple[str, str]:
    """For a query in an alert template: the matchers `namespace='%s',model='%s'` (the
    cluster label first, if any) and the `$labels.*` that `printf` fills them with."""
    names = (params.cluster_label, *labels) if params.cluster_label else labels
    return ",".join(f"{n}='%s'" for n in names), " ".join(f"$labels.{n}" for n in names)


def requests_rate(params: Params) -> str:
    return f"namespace_model:infermeter_requests:rate{params.rate_window}"


def recording_groups(params: Params) -> list[dict[str, Any]]:
    w = params.rate_window
    rules: list[dict[str, Any]] = []
    for lat in LATENCIES:
        for q in (50, 90, 99):
            # `>= 0` drops the NaN of idle windows, so baselines only see periods with traffic
            rules.append({
                "record": lat.p(q, params),
                "expr": f"histogram_quantile({q / 100}, {_rate(lat.metric + '_bucket', NM + ', le', params)}) >= 0",
            })  # fmt: skip

    def output(by: str) -> str:
        return (
            f"{_rate('infermeter_completion_tokens_total', by, params)} + "
            f"{_rate('infermeter_completion_tokens_estimated_total', by, params)}"
        )

    rules += [
        {"record": requests_rate(params), "expr": _rate("infermeter_requests_total", NM, params)},
        {"record": f"namespace_model:infermeter_request_errors:rate{w}",
         "expr": _rate("infermeter_request_errors_total", NM, params)},
        {"record": f"namespace_model_error_type:infermeter_request_errors:rate{w}",
         "expr": _rate("infermeter_request_errors_total", NM + ", error_type", params)},
        {"record": f"namespace_model:infermeter_request_errors:ratio_rate{w}",
         "expr": f"namespace_model:infermeter_request_errors:rate{w} / {requests_rate(params)} > -1"},
        {"record": f"namespace_model:infermeter_goodput:ratio_rate{w}",
         "expr": f"{_rate('infermeter_goodput_requests_total', NM, params)} / {requests_rate(params)} > -1"},
        {"record": f"namespace_model:infermeter_prompt_tokens:rate{w}",
         "expr": _rate("infermeter_prompt_tokens_total", NM, params)},
        {"record": f"namespace_model:infermeter_output_tokens:rate{w}", "expr": output(NM)},
        {"record": f"namespace_pod:infermeter_output_tokens:rate{w}", "expr": output("namespace, pod")},
        {"record": f"namespace_pod:infermeter_gpu_power:watts_rate{w}",
         "expr": _rate("infermeter_gpu_energy_joules_total", "namespace, pod", params)},
        {"record": "namespace_pod:infermeter_energy_per_output_token:joules",
         "expr": f"namespace_pod:infermeter_gpu_power:watts_rate{w} / namespace_pod:infermeter_output_tokens:rate{w} > 0"},
        {"record": "namespace_pod:infermeter_gpus:count",
         "expr": f'count by ({params.by("namespace, pod")}) (infermeter_gpu_info{{parent_uuid=""}})'},
        {"record": "namespace_pod:infermeter_cost_per_million_output_tokens:currency",
         "expr": f"namespace_pod:infermeter_gpus:count * {params.gpu_hourly_price} / 3600 / "
                 f"namespace_pod:infermeter_output_tokens:rate{w} * 1e6 > 0"},
    ]  # fmt: skip
    baselines = []
    for lat in LATENCIES:
        p99 = lat.p(99, params)
        window = f"{p99}[{params.baseline_window}] offset {params.baseline_offset}"
        baselines.append({
            "record": lat.baseline(params),
            "expr": f"quantile_over_time(0.5, {window}) "
                    f"and count_over_time({window}) >= {params.baseline_min_samples}",
        })  # fmt: skip
    return [
        {"name": "infermeter.recording", "rules": rules},
        {"name": "infermeter.baselines", "rules": baselines},
        {"name": "infermeter.engine", "rules": engine_recording_rules(params)},
        *cost.recording(params),
        *availability.recording(params),
    ]


def engine_recording_rules(params: Params) -> list[dict[str, Any]]:
    """Engine saturation per namespace and model, beside the latencies of the same model."""
    w = params.rate_window
    hits, queries = (
        _rate(f"infermeter_engine_prefix_cache_{kind}_total", NM, params)
        for kind in ("hits", "queries")
    )
    return [
        {"record": "namespace_model:infermeter_engine_requests_waiting:sum",
         "expr": f"sum by ({params.by(NM)}) (infermeter_engine_requests_waiting)"},
        {"record": "namespace_model:infermeter_engine_requests_running:sum",
         "expr": f"sum by ({params.by(NM)}) (infermeter_engine_requests_running)"},
        {"record": "namespace_model:infermeter_engine_kv_cache_usage_ratio:max",
         "expr": f"max by ({params.by(NM)}) (infermeter_engine_kv_cache_usage_ratio)"},
        {"record": f"namespace_model:infermeter_engine_prefix_cache_hits:ratio_rate{w}",
         "expr": f"{hits} / {queries} > -1"},
        {"record": f"namespace_model:infermeter_engine_preemptions:rate{w}",
         "expr": _rate("infermeter_engine_preemptions_total", NM, params)},
    ]  # fmt: skip


def _engine_now(params: Params, metric: str, how: str, known: str, unknown: str) -> str:
    """Alert-template text: the engine's `metric` for the alert's namespace and model now
    (`known` around {}, else `unknown`); engines that name no model (TGI, llama.cpp) count
    for every model of the namespace."""
    (nm, nm_args), (ns, ns_args) = _where(params, "namespace", "model"), _where(params, "namespace")
    query = f"{how}({metric}{{{nm}}}) or {how}({metric}{{{ns},model=''}})"
    return (
        f'{{{{ with printf "{query}" {nm_args} {ns_args} | query }}}}'
        + known.format(
            "{{ . | first | value | "
            + ("humanizePercentage" if how == "max" else "humanize")
            + " }}"
        )
        + f"{{{{ else }}}}{unknown}{{{{ end }}}}"
    )


def engine_at_firing(params: Params) -> str:
    return (
        " Engine now: "
        + _engine_now(
            params,
            "infermeter_engine_requests_waiting",
            "sum",
            "{} requests waiting",
            "queue unknown",
        )
        + ", "
        + _engine_now(
            params,
            "infermeter_engine_kv_cache_usage_ratio",
            "max",
            "KV cache {} full",
            "KV cache unknown",
        )
        + "."
    )


WITH_ENGINE_FIGURES = ("TTFT", "ITL")  # latencies a queue or a full KV cache explains


def _alert(
    params: Params,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    *,
    per_cluster: bool = True,
) -> dict[str, Any]:
    if params.cluster_label and per_cluster:  # the alert's series keep the cluster label
        summary += f" ({params.cluster_label} {{{{ $labels.{params.cluster_label} }}}})"
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **params.labels},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{params.runbook_url}#{name.lower()}",
        },
    }


def _latency_alerts(params: Params, lat: Latency) -> list[dict[str, Any]]:
    p99, base = lat.p(99, params), lat.baseline(params)
    floor, slo = getattr(params, lat.floor), getattr(params, lat.slo)
    busy = f"on ({params.by(NM)}) {requests_rate(params)} > {params.min_request_rate}"
    where, args = _where(params, "namespace", "model")
    measured = (
        f'{{{{ with printf "{p99}{{{where}}}" {args} | query }}}}'
        "{{ . | first | value | humanizeDuration }}{{ end }}"
    )
    return [
        _alert(
            params,
            f"Infermeter{lat.key}AboveBaseline",
            f"({p99} / {base} > {params.multiplier}) and ({p99} > {floor}) and {busy}",
            params.baseline_for,
            "critical",
            f"{lat.what.capitalize()} p99 of {{{{ $labels.model }}}} is "
            f'{{{{ $value | printf "%.1f" }}}}x its baseline',
            f"p99 {lat.what} of model {{{{ $labels.model }}}} in {{{{ $labels.namespace }}}} is "
            f'{measured}, {{{{ $value | printf "%.1f" }}}}x its median p99 of the last '
            f"{params.baseline_window} (alert above {params.multiplier}x)."
            + (engine_at_firing(params) if lat.key in WITH_ENGINE_FIGURES else ""),
        ),
        _alert(
            params,
            f"Infermeter{lat.key}AboveSLO",
            f"({p99} > {slo}) unless on ({params.by(NM)}) {base} and {busy}",
            params.slo_for,
            "warning",
            f"{lat.what.capitalize()} p99 of {{{{ $labels.model }}}} is above {slo}s (no baseline yet)",
            f"p99 {lat.what} of model {{{{ $labels.model }}}} in {{{{ $labels.namespace }}}} is "
            f"{{{{ $value | humanizeDuration }}}}, above the static {slo}s threshold; the model "
            f"has too little history for a baseline.",
        ),
    ]


def alert_groups(params: Params) -> list[dict[str, Any]]:
    w = params.rate_window
    ev = params.event_window
    pod = params.by("namespace, pod")
    rules: list[dict[str, Any]] = []
    for lat in LATENCIES:
        rules += _latency_alerts(params, lat)
    rules += [
        _alert(params, "InfermeterErrorRatioHigh",
               f"namespace_model:infermeter_request_errors:ratio_rate{w} > {params.error_ratio} "
               f"and on ({params.by(NM)}) {requests_rate(params)} > {params.min_request_rate}",
               params.error_for, "critical",
               "{{ $labels.model }} fails {{ $value | humanizePercentage }} of its requests",
               "{{ $value | humanizePercentage }} of requests to {{ $labels.model }} in "
               "{{ $labels.namespace }} failed over the last " + w + " (alert above "
               f"{params.error_ratio:.0%}). Split by error_type to see where."),
        _alert(params, "InfermeterUpstreamUnreachable",
               f'sum by ({pod}) (rate(infermeter_request_errors_total{{error_type="upstream_connect"}}[{w}])) > 0',
               params.unreachable_for, "critical",
               "infermeter in {{ $labels.pod }} cannot reach its inference server",
               "{{ $value | printf \"%.2f\" }} requests/s from {{ $labels.pod }} in {{ $labels.namespace }} "
               "fail to connect to the upstream (502 to clients)."),
        _alert(params, "InfermeterRequestsStuck",
               f"sum by ({pod}) (infermeter_requests_in_flight) > 0 and "
               f"sum by ({pod}) (rate(infermeter_requests_total[{w}])) == 0",
               params.stuck_for, "warning",
               "Requests in {{ $labels.pod }} are in flight but none completes",
               "{{ $value }} requests are open in {{ $labels.pod }} ({{ $labels.namespace }}) and "
               f"none completed in {w}: the inference server may be hung."),
        _alert(params, "InfermeterGPULost", "infermeter_gpu_up == 0", params.gpu_lost_for,
               "critical", "GPU {{ $labels.gpu }} of {{ $labels.pod }} is lost",
               "NVML reports GPU {{ $labels.gpu }} ({{ $labels.uuid }}) of {{ $labels.pod }} as "
               "lost or failing; its other metrics are gone."),
        _alert(params, "InfermeterNVMLDown", "infermeter_nvml_up == 0", params.nvml_down_for,
               "warning", "infermeter in {{ $labels.pod }} cannot read GPUs",
               "NVML is not initialised in {{ $labels.pod }} ({{ $labels.namespace }}): no GPU "
               "metrics. Inference metrics are unaffected."),
        _alert(params, "InfermeterGPUTemperatureHigh",
               f"infermeter_gpu_temperature_celsius > {params.gpu_temperature_celsius}",
               params.gpu_temperature_for, "warning",
               "GPU {{ $labels.gpu }} of {{ $labels.pod }} is at {{ $value }}°C",
               "GPU {{ $labels.gpu }} ({{ $labels.uuid }}) of {{ $labels.pod }} has been above "
               f"{params.gpu_temperature_celsius:g}°C for {params.gpu_temperature_for}."),
        _alert(params, "InfermeterGPUThermalThrottling",
               f'max by ({pod}, gpu, uuid) (infermeter_gpu_clock_event_active'
               '{reason=~"hw_slowdown|hw_thermal_slowdown|sw_thermal_slowdown"}) == 1',
               params.throttle_for, "warning",
               "GPU {{ $labels.gpu }} of {{ $labels.pod }} is thermally throttled",
               "Clocks of GPU {{ $labels.gpu }} ({{ $labels.uuid }}) in {{ $labels.pod }} have "
               f"been held down by a thermal or hardware slowdown for {params.throttle_for}."),
        _alert(params, "InfermeterGPUPowerBrake",
               'infermeter_gpu_clock_event_active{reason="hw_power_brake_slowdown"} == 1',
               params.throttle_for, "warning",
               "GPU {{ $labels.gpu }} of {{ $labels.pod }} is power-braked",
               "The power brake (external power limit) has held the clocks of GPU "
               "{{ $labels.gpu }} in {{ $labels.pod }} down for " + params.throttle_for + "."),
        _alert(params, "InfermeterGPUXidErrors",
               f"increase(infermeter_gpu_xid_errors_total[{ev}]) > 0 or "
               f"(infermeter_gpu_xid_errors_total unless infermeter_gpu_xid_errors_total offset {ev})",
               "0m", "warning",
               "GPU {{ $labels.gpu }} of {{ $labels.pod }} reported XID {{ $labels.xid }}",
               "The driver reported XID error {{ $labels.xid }} on GPU {{ $labels.gpu }} "
               "({{ $labels.uuid }}) of {{ $labels.pod }} within " + ev + "."),
        _alert(params, "InfermeterGPUUncorrectableECC",
               f'increase(infermeter_gpu_ecc_errors_total{{type="uncorrected"}}[{ev}]) > 0',
               "0m", "critical",
               "Uncorrectable ECC errors on GPU {{ $labels.gpu }} of {{ $labels.pod }}",
               "{{ $value | humanize }} uncorrectable ECC errors on GPU {{ $labels.gpu }} "
               "({{ $labels.uuid }}) of {{ $labels.pod }} within " + ev + ": results may be wrong."),
        _alert(params, "InfermeterGPUMemoryNearlyFull",
               f"infermeter_gpu_memory_used_bytes / infermeter_gpu_memory_total_bytes > {params.gpu_memory_ratio}",
               params.gpu_memory_for, "warning",
               "GPU {{ $labels.gpu }} of {{ $labels.pod }} memory is {{ $value | humanizePercentage }} full",
               "Memory of GPU {{ $labels.gpu }} ({{ $labels.uuid }}) in {{ $labels.pod }} has been "
               f"above {params.gpu_memory_ratio:.0%} for {params.gpu_memory_for}."),
        _alert(params, "InfermeterTargetDown", f"up{{{params.job_selector}}} == 0",
               params.target_down_for, "warning",
               "Prometheus cannot scrape infermeter at {{ $labels.instance }}",
               "The scrape of {{ $labels.instance }} ({{ $labels.job }}) has failed for "
               + params.target_down_for + ": no inference or GPU metrics from it."),
        _alert(params, "InfermeterEventLoopLagHigh",
               f"histogram_quantile(0.99, sum by ({pod}, le) "
               f"(rate(infermeter_event_loop_lag_seconds_bucket[{w}]))) > {params.loop_lag_seconds}",
               params.loop_lag_for, "warning",
               "infermeter in {{ $labels.pod }} runs late: its latencies are inflated",
               "The proxy's event loop in {{ $labels.pod }} runs {{ $value | humanizeDuration }} "
               "late at p99: the latencies it measures include its own delay."),
    ]  # fmt: skip

    def alert(*args: str) -> dict[str, Any]:
        return _alert(params, *args)

    def global_alert(*args: str) -> dict[str, Any]:
        return _alert(params, *args, per_cluster=False)

    return [
        {"name": "infermeter.alerts", "rules": rules},
        {"name": "infermeter.engine.alerts", "rules": engine_alerts(params)},
        # budgets are a team's across every cluster: spend by team is not per cluster
        {"name": "infermeter.spend.alerts", "rules": cost.alerts(params, global_alert)},
        {"name": "infermeter.availability.alerts", "rules": availability.alerts(params, alert)},
    ]


def engine_alerts(params: Params) -> list[dict[str, Any]]:
    by = params.by("namespace, pod, model, engine")
    waiting = f"sum by ({by}) (infermeter_engine_requests_waiting)"
    where, args = _where(params, "namespace", "pod", "model")
    waiting_now = (
        f'{{{{ with printf "sum(infermeter_engine_requests_waiting{{{where}}})" {args} | query }}}}'
        "{{ . | first | value | humanize }}{{ end }}"
    )
    return [
        _alert(params, "InfermeterEngineSaturated",
               f"max by ({by}) (infermeter_engine_kv_cache_usage_ratio) >= {params.engine_kv_cache_ratio} "
               f"and on ({by}) {waiting} > 0 "
               f"and on ({by}) sum by ({by}) (deriv(infermeter_engine_requests_waiting[{params.rate_window}])) >= 0",
               params.engine_saturated_for, "warning",
               "{{ $labels.engine }} serving {{ $labels.model }} in {{ $labels.pod }} is saturated",
               "The KV cache of {{ $labels.engine }} serving {{ $labels.model }} in {{ $labels.pod }} "
               "({{ $labels.namespace }}) is {{ $value | humanizePercentage }} full and "
               f"{waiting_now} requests wait, a queue not draining for {params.engine_saturated_for}: "
               "new requests queue and their time to first token grows."),
        _alert(params, "InfermeterEngineMetricsDown", "infermeter_engine_up == 0",
               params.engine_down_for, "warning",
               "infermeter in {{ $labels.pod }} cannot read its inference engine's metrics",
               "Fetching the inference engine's /metrics from {{ $labels.pod }} ({{ $labels.namespace }}) "
               f"has failed for {params.engine_down_for}: no queue or KV-cache figures (the sidecar's "
               "log says why). Inference and GPU metrics are unaffected."),
    ]  # fmt: skip


def _dump(groups: list[dict[str, Any]]) -> str:
    header = "# Rendered by `infermeter rules` from src/infermeter/rules; do not edit by hand.\n"
    return header + yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000)


def recording_rules(params: Params | None = None) -> str:
    return _dump(recording_groups(params or Params()))


def alert_rules(params: Params | None = None) -> str:
    return _dump(alert_groups(params or Params()))


def budget_rules(params: Params | None = None) -> str:
    """The monthly budgets (rule parameters) as recorded series; the Helm chart renders the
    same group from its values."""
    return _dump([cost.budget_group(params or Params())])
