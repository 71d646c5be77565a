"""promtool unit tests for the rules, built as data: every alert fires where it should, with
its exact labels and annotations, and stays silent where it should."""

from __future__ import annotations

from typing import Any

from generate.promtool_spend import availability_test, cost_test
from infermeter.rules.cost import budget_group
from infermeter.rules.params import Params
from infermeter.rules.render import LATENCIES, alert_groups, recording_groups

RUNBOOK = Params().runbook_url
NORMAL, SLOW, VERY_SLOW = 1, 3, 5  # bucket index a request lands in (see UNITS)
UNITS = (1, 2, 5, 10, 20, 50)  # bucket bounds in units of the metric's scale
SCALE = {"TTFT": 0.1, "ITL": 0.01, "TPOT": 0.01, "E2E": 2.0}
BASE = {"namespace": "ns", "api": "chat_completions", "pod": "p"}
EVAL = "1520m"  # 25 h 20 min: a day of history, then 20 min of the scenario's ending
#: The latency scenario's own evaluation interval: a day of history evaluated every minute
#: cost promtool ~45 s of CPU (1,520 evaluations of every rule over 205 series); every 5
#: minutes the day is still whole, each `for: 10m` still spans three evaluations, and the
#: alerts and their values at EVAL are the same.
LATENCY_EVALUATION = "5m"
ENGINE_NOW = {
    key: " Engine now: 12 requests waiting, KV cache 97% full." for key in ("TTFT", "ITL")
}


def _series(phases: list[tuple[int, float]]) -> str:
    """Expanding notation for a counter growing by `inc` per minute during each phase."""
    parts, value, first = [], 0.0, True
    for minutes, inc in phases:
        if first:
            parts.append(f"0+{inc:g}x{minutes}")
            value = inc * minutes
            first = False
        else:
            parts.append(f"{value + inc:g}+{inc:g}x{minutes - 1}")
            value += inc * minutes
    return " ".join(parts)


def _model(model: str, phases: list[tuple[int, int | None, float]]) -> list[dict[str, str]]:
    """Series of one model: phases of (minutes, bucket index or None for idle, req/min)."""
    out = []
    labels = {**BASE, "model": model}
    for lat in LATENCIES:
        scale = SCALE[lat.key]
        bounds = [f"{u * scale:g}" for u in UNITS] + ["+Inf"]
        for i, le in enumerate(bounds):
            per_phase = [
                (m, rate if (idx is not None and idx <= i) else 0.0) for m, idx, rate in phases
            ]
            out.append({"series": _labels(lat.metric + "_bucket", {**labels, "le": le}),
                        "values": _series(per_phase)})  # fmt: skip
    requests = [(m, rate if idx is not None else 0.0) for m, idx, rate in phases]
    out.append({"series": _labels("infermeter_requests_total", {**labels, "code": "200"}),
                "values": _series(requests)})  # fmt: skip
    return out


def _labels(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def latency_test() -> dict[str, Any]:
    series = []
    series += _model("jump", [(1500, NORMAL, 60), (30, SLOW, 60)])
    series += _model("steady", [(1530, NORMAL, 60)])
    series += _model("new", [(1500, None, 0), (30, VERY_SLOW, 60)])
    series += _model("quiet", [(1500, NORMAL, 1), (30, SLOW, 1)])
    gaps: list[tuple[int, int | None, float]] = []
    for _ in range(12):
        gaps += [(60, NORMAL, 60), (60, None, 0)]
    series += _model("gaps", [*gaps, (60, NORMAL, 60), (30, NORMAL, 60)])
    # slow for 8 min: the alert is pending at two evaluations (1505m, 1510m), 5 min < `for`
    series += _model("spike", [(1500, NORMAL, 60), (8, SLOW, 60), (22, NORMAL, 60)])
    series += _model("slow_steady", [(1530, VERY_SLOW, 60)])
    engine = {"namespace": "ns", "pod": "p", "model": "jump", "engine": "vllm"}
    series += [  # the engine's figures at firing time go into the TTFT/ITL descriptions
        {"series": _labels("infermeter_engine_requests_waiting", engine), "values": "12x1530"},
        {"series": _labels("infermeter_engine_kv_cache_usage_ratio", engine), "values": "0.97x1530"},
    ]  # fmt: skip
    tests = []
    for lat in LATENCIES:
        scale = SCALE[lat.key]
        p99_slow = (UNITS[SLOW - 1] + (UNITS[SLOW] - UNITS[SLOW - 1]) * 0.99) * scale
        p99_very = (UNITS[VERY_SLOW - 1] + (UNITS[VERY_SLOW] - UNITS[VERY_SLOW - 1]) * 0.99) * scale
        name = f"Infermeter{lat.key}AboveBaseline"
        tests.append({"eval_time": EVAL, "alertname": name, "exp_alerts": [{
            "exp_labels": {"severity": "critical", "namespace": "ns", "model": "jump"},
            "exp_annotations": {
                "summary": f"{lat.what.capitalize()} p99 of jump is 5.0x its baseline",
                "description": f"p99 {lat.what} of model jump in ns is {_human(p99_slow)}, 5.0x its "
                               f"median p99 of the last 1d (alert above 2.0x)." + ENGINE_NOW.get(lat.key, ""),
                "runbook_url": f"{RUNBOOK}#{name.lower()}",
            }}]})  # fmt: skip
        slo = getattr(Params(), lat.slo)
        name = f"Infermeter{lat.key}AboveSLO"
        tests.append({"eval_time": EVAL, "alertname": name, "exp_alerts": [{
            "exp_labels": {"severity": "warning", "namespace": "ns", "model": "new"},
            "exp_annotations": {
                "summary": f"{lat.what.capitalize()} p99 of new is above {slo}s (no baseline yet)",
                "description": f"p99 {lat.what} of model new in ns is {_human(p99_very)}, above the "
                               f"static {slo}s threshold; the model has too little history for a baseline.",
                "runbook_url": f"{RUNBOOK}#{name.lower()}",
            }}]})  # fmt: skip
        # the spike is shorter than `for`: silent while it happens, too
        tests.append(
            {
                "eval_time": "1510m",
                "alertname": f"Infermeter{lat.key}AboveBaseline",
                "exp_alerts": [],
            }
        )
    return {"interval": "1m", "input_series": series, "alert_rule_test": tests}


def _human(seconds: float) -> str:
    """Prometheus' humanizeDuration for the values used here (under a minute)."""
    if seconds >= 60:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    if seconds >= 1:
        return f"{seconds:.4g}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.4g}ms"
    return f"{seconds * 1e6:.4g}us"


def health_test() -> dict[str, Any]:
    pod = {"namespace": "ns", "pod": "p"}
    gpu = {**pod, "gpu": "0", "uuid": "GPU-0"}
    model = {**pod, "model": "m", "api": "chat_completions"}

    def s(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
        return {"series": _labels(name, labels), "values": values}

    series = [
        s("infermeter_requests_total", {**model, "code": "200"}, "0+60x40"),
        s("infermeter_request_errors_total", {**model, "error_type": "upstream_connect"}, "0+6x40"),
        s("infermeter_requests_in_flight", {**model, "pod": "q"}, "3x40"),
        s("infermeter_requests_total", {**model, "pod": "q", "code": "200"}, "5x40"),
        s("infermeter_gpu_up", gpu, "0x40"),
        s("infermeter_nvml_up", pod, "0x40"),
        s("infermeter_gpu_temperature_celsius", gpu, "90x40"),
        s("infermeter_gpu_clock_event_active", {**gpu, "reason": "hw_thermal_slowdown"}, "1x40"),
        s("infermeter_gpu_clock_event_active", {**gpu, "reason": "sw_power_cap"}, "1x40"),
        s(
            "infermeter_gpu_clock_event_active",
            {**gpu, "reason": "hw_power_brake_slowdown"},
            "1x40",
        ),
        s("infermeter_gpu_xid_errors_total", {**gpu, "xid": "79"}, "_x20 1x20"),
        s("infermeter_gpu_ecc_errors_total", {**gpu, "type": "uncorrected"}, "0x20 2x20"),
        s("infermeter_gpu_memory_used_bytes", gpu, "99x40"),
        s("infermeter_gpu_memory_total_bytes", gpu, "100x40"),
        s("up", {"job": "infermeter", "instance": "10.0.0.1:8091"}, "0x40"),
        s("infermeter_event_loop_lag_seconds_bucket", {**pod, "le": "0.01"}, "0x40"),
        s("infermeter_event_loop_lag_seconds_bucket", {**pod, "le": "0.1"}, "0+10x40"),
        s("infermeter_event_loop_lag_seconds_bucket", {**pod, "le": "+Inf"}, "0+10x40"),
    ]

    def alert(
        name: str, labels: dict[str, str], severity: str, summary: str, description: str
    ) -> dict[str, Any]:
        return {"exp_labels": {"severity": severity, **labels}, "exp_annotations": {
            "summary": summary, "description": description, "runbook_url": f"{RUNBOOK}#{name.lower()}"}}  # fmt: skip

    t = "30m"
    tests = [
        ("InfermeterErrorRatioHigh", [alert("InfermeterErrorRatioHigh", {"namespace": "ns", "model": "m"}, "critical",
            "m fails 10% of its requests",
            "10% of requests to m in ns failed over the last 5m (alert above 5%). Split by error_type to see where.")]),
        ("InfermeterUpstreamUnreachable", [alert("InfermeterUpstreamUnreachable", pod, "critical",
            "infermeter in p cannot reach its inference server",
            "0.10 requests/s from p in ns fail to connect to the upstream (502 to clients).")]),
        ("InfermeterRequestsStuck", [alert("InfermeterRequestsStuck", {**pod, "pod": "q"}, "warning",
            "Requests in q are in flight but none completes",
            "3 requests are open in q (ns) and none completed in 5m: the inference server may be hung.")]),
        ("InfermeterGPULost", [alert("InfermeterGPULost", gpu, "critical", "GPU 0 of p is lost",
            "NVML reports GPU 0 (GPU-0) of p as lost or failing; its other metrics are gone.")]),
        ("InfermeterNVMLDown", [alert("InfermeterNVMLDown", pod, "warning", "infermeter in p cannot read GPUs",
            "NVML is not initialised in p (ns): no GPU metrics. Inference metrics are unaffected.")]),
        ("InfermeterGPUTemperatureHigh", [alert("InfermeterGPUTemperatureHigh", gpu, "warning",
            "GPU 0 of p is at 90°C", "GPU 0 (GPU-0) of p has been above 85°C for 5m.")]),
        ("InfermeterGPUThermalThrottling", [alert("InfermeterGPUThermalThrottling", gpu, "warning",
            "GPU 0 of p is thermally throttled",
            "Clocks of GPU 0 (GPU-0) in p have been held down by a thermal or hardware slowdown for 10m.")]),
        ("InfermeterGPUPowerBrake", [alert("InfermeterGPUPowerBrake", {**gpu, "reason": "hw_power_brake_slowdown"},
            "warning", "GPU 0 of p is power-braked",
            "The power brake (external power limit) has held the clocks of GPU 0 in p down for 10m.")]),
        ("InfermeterGPUUncorrectableECC", [alert("InfermeterGPUUncorrectableECC", {**gpu, "type": "uncorrected"},
            "critical", "Uncorrectable ECC errors on GPU 0 of p",
            "2 uncorrectable ECC errors on GPU 0 (GPU-0) of p within 10m: results may be wrong.")]),
        ("InfermeterGPUMemoryNearlyFull", [alert("InfermeterGPUMemoryNearlyFull", gpu, "warning",
            "GPU 0 of p memory is 99% full", "Memory of GPU 0 (GPU-0) in p has been above 98% for 15m.")]),
        ("InfermeterTargetDown", [alert("InfermeterTargetDown", {"job": "infermeter", "instance": "10.0.0.1:8091"},
            "warning", "Prometheus cannot scrape infermeter at 10.0.0.1:8091",
            "The scrape of 10.0.0.1:8091 (infermeter) has failed for 5m: no inference or GPU metrics from it.")]),
        ("InfermeterEventLoopLagHigh", [alert("InfermeterEventLoopLagHigh", pod, "warning",
            "infermeter in p runs late: its latencies are inflated",
            "The proxy's event loop in p runs 99.1ms late at p99: the latencies it measures include its own delay.")]),
    ]  # fmt: skip
    rule_tests: list[dict[str, Any]] = [
        {"eval_time": t, "alertname": n, "exp_alerts": e} for n, e in tests
    ]
    xid = alert("InfermeterGPUXidErrors", {**gpu, "xid": "79"}, "warning", "GPU 0 of p reported XID 79",
                "The driver reported XID error 79 on GPU 0 (GPU-0) of p within 10m.")  # fmt: skip
    rule_tests += [
        {
            "eval_time": "21m",
            "alertname": "InfermeterGPUXidErrors",
            "exp_alerts": [xid],
        },  # first event: a new series
        {
            "eval_time": "35m",
            "alertname": "InfermeterGPUXidErrors",
            "exp_alerts": [],
        },  # nothing new since
        {
            "eval_time": "3m",
            "alertname": "InfermeterGPUTemperatureHigh",
            "exp_alerts": [],
        },  # not yet `for`
    ]
    return {"interval": "1m", "input_series": series, "alert_rule_test": rule_tests}


def engine_test() -> dict[str, Any]:
    """InfermeterEngineSaturated fires on a full KV cache with a queue that does not drain,
    and stays silent when the cache has room, the queue is empty or draining, or the
    saturation is shorter than `for`; InfermeterEngineMetricsDown fires on engine_up 0."""
    pod = {"namespace": "ns", "pod": "p", "engine": "vllm"}

    def engine(model: str, kv: str, waiting: str) -> list[dict[str, str]]:
        labels = {**pod, "model": model}
        return [
            {"series": _labels("infermeter_engine_kv_cache_usage_ratio", labels), "values": kv},
            {"series": _labels("infermeter_engine_requests_waiting", labels), "values": waiting},
        ]

    series = [
        *engine("full", "0.97x40", "0+1x40"),  # cache full, queue growing: saturated
        *engine("plateau", "0.99x40", "5x40"),  # cache full, queue steady: not draining
        *engine("draining", "0.97x40", "40-1x40"),  # cache full, queue shrinking
        *engine("room", "0.5x40", "0+1x40"),  # a queue, but the cache has room
        *engine("empty", "0.99x40", "0x40"),  # a full cache, nobody waiting
        *engine("blip", "0.97x20 0.5x20", "0+1x40"),  # saturated 20 min, then room
        {"series": _labels("infermeter_engine_up", {"namespace": "ns", "pod": "q"}), "values": "0x40"},
    ]  # fmt: skip

    def saturated(model: str, kv: str, waiting: str) -> dict[str, Any]:
        return {"exp_labels": {"severity": "warning", **pod, "model": model}, "exp_annotations": {
            "summary": f"vllm serving {model} in p is saturated",
            "description": f"The KV cache of vllm serving {model} in p (ns) is {kv} full and "
                           f"{waiting} requests wait, a queue not draining for 5m: new requests "
                           "queue and their time to first token grows.",
            "runbook_url": f"{RUNBOOK}#infermeterenginesaturated"}}  # fmt: skip

    down = {"exp_labels": {"severity": "warning", "namespace": "ns", "pod": "q"}, "exp_annotations": {
        "summary": "infermeter in q cannot read its inference engine's metrics",
        "description": "Fetching the inference engine's /metrics from q (ns) has failed for 10m: no "
                       "queue or KV-cache figures (the sidecar's log says why). Inference and GPU "
                       "metrics are unaffected.",
        "runbook_url": f"{RUNBOOK}#infermeterenginemetricsdown"}}  # fmt: skip
    return {"interval": "1m", "input_series": series, "alert_rule_test": [
        {"eval_time": "15m", "alertname": "InfermeterEngineSaturated",
         "exp_alerts": [saturated("full", "97%", "15"), saturated("plateau", "99%", "5"),
                        saturated("blip", "97%", "15")]},
        {"eval_time": "30m", "alertname": "InfermeterEngineSaturated",
         "exp_alerts": [saturated("full", "97%", "30"), saturated("plateau", "99%", "5")]},
        {"eval_time": "3m", "alertname": "InfermeterEngineSaturated", "exp_alerts": []},
        {"eval_time": "15m", "alertname": "InfermeterEngineMetricsDown", "exp_alerts": [down]},
        {"eval_time": "5m", "alertname": "InfermeterEngineMetricsDown", "exp_alerts": []},
    ]}  # fmt: skip


def group_names() -> list[str]:
    params = Params()
    groups = [*recording_groups(params), budget_group(params), *alert_groups(params)]
    return [group["name"] for group in groups]


def build_test_file(rule_files: list[str]) -> dict[str, Any]:
    return {
        "rule_files": rule_files,
        "evaluation_interval": "1m",
        # groups read each other's records: evaluate them in file order, so a test never
        # depends on which group promtool happens to run first
        "group_eval_order": group_names(),
        "tests": [health_test(), engine_test(), cost_test(), availability_test()],
    }


def build_latency_test_file(rule_files: list[str]) -> dict[str, Any]:
    """The latency scenario (a day of history) in a file of its own: the evaluation
    interval is per file, and the other scenarios need one of a minute."""
    return {
        "rule_files": rule_files,
        "evaluation_interval": LATENCY_EVALUATION,
        "group_eval_order": group_names(),
        "tests": [latency_test()],
    }
