"""The three dashboards: Inference, GPU, Overview/capacity. One panel, one SRE question.

Where a recording rule exists (`deploy/prometheus/recording-rules.yaml`) a panel shows it,
so a panel is exactly what an alert sees (the latency panels draw the recorded p99 next to
the recorded baseline and the alert's multiple of it). Those rules aggregate per namespace
and model (or namespace and pod), so the `pod` variable does not narrow them; the raw
queries (`$__rate_interval`) honour every variable.
"""

from __future__ import annotations

from generate.dashboards.builder import Dashboard, Panel, Row, SeriesStyle, Target, Variable
from infermeter.rules import Params

RULES = Params()  # the defaults the checked-in rule files are rendered with
W = RULES.rate_window

INF = 'namespace=~"$namespace", pod=~"$pod", model=~"$model"'  # raw inference series
NM = 'namespace=~"$namespace", model=~"$model"'  # namespace_model:* rules
NP = 'namespace=~"$namespace", pod=~"$pod"'  # GPU and sidecar series, namespace_pod:* rules
RI = "[$__rate_interval]"
# engine figures per namespace and model; engines that name no model (TGI, llama.cpp) have
# model="" and show under every model selection
NME = 'namespace=~"$namespace", model=~"$model|"'

TOKENS_PER_SECOND = "suffix: tok/s"
PER_MILLION_TOKENS = "suffix: /1M tok"

VARIABLES = (
    Variable("namespace", "Namespace", "label_values(infermeter_build_info, namespace)"),
    Variable(
        "model", "Model", 'label_values(infermeter_requests_total{namespace=~"$namespace"}, model)'
    ),
    Variable(
        "pod",
        "Pod",
        'label_values(infermeter_requests_total{namespace=~"$namespace", model=~"$model"}, pod)',
    ),
)

BASELINE = f"{RULES.multiplier:g}x baseline"
LATENCY_STYLES = (
    SeriesStyle(" p50$", fill=0),
    SeriesStyle(" baseline$", dashed=True, color="blue", width=2),
    SeriesStyle(f" {BASELINE}$", dashed=True, color="red", width=2),  # after: it wins
)
DASHED_LIMIT = (SeriesStyle("(total|limit|threshold|memory)$", dashed=True),)


def _latency(title: str, metric: str, question: str) -> Panel:
    """Recorded p50/p90/p99 per model, the recorded baseline and the alert's line above it."""
    p = f"namespace_model:{metric}:p{{}}_{W}{{{{{NM}}}}}"
    base = f"namespace_model:{metric}:p99_{W}:baseline_{RULES.baseline_window}{{{NM}}}"
    return Panel(
        title,
        f"{question} Recorded p50/p90/p99 per model ({W} windows); dashed: the baseline "
        f"(median p99 of the last {RULES.baseline_window}, absent until enough history) and "
        f"{BASELINE}, where the alert fires.",
        "s",
        (
            Target(p.format(50), "{{model}} p50"),
            Target(p.format(90), "{{model}} p90"),
            Target(p.format(99), "{{model}} p99"),
            Target(base, "{{model}} baseline"),
            Target(f"{RULES.multiplier:g} * {base}", f"{{{{model}}}} {BASELINE}"),
        ),
        styles=LATENCY_STYLES,
        min=0,
    )


def _quantiles(metric: str, by: str, what: str, selector: str = INF) -> tuple[Target, ...]:
    bucket = f"{metric}_bucket{{{selector}}}"
    return tuple(
        Target(
            f"histogram_quantile({q}, sum by ({by}le) (rate({bucket}{RI})))",
            f"{what} p{round(q * 100)}",
        )
        for q in (0.5, 0.99)
    )


ENGINE_NOTE = (
    "The engine's own figure from its /metrics (infermeter_engine_*, same names for every "
    "engine), recorded per model."
)


def _saturation() -> Row:
    """Queue or GPU? The engine's saturation, right under the TTFT panels it explains."""
    return Row(
        "Saturation: why is TTFT up?",
        (
            Panel(
                "Requests waiting (engine queue)",
                "Is TTFT up because requests queue? Requests waiting in the engine, not yet "
                f"scheduled. {ENGINE_NOTE}",
                "short",
                (
                    Target(
                        f"namespace_model:infermeter_engine_requests_waiting:sum{{{NME}}}",
                        "{{model}} waiting",
                    ),
                ),
                min=0,
            ),
            Panel(
                "KV cache usage",
                "Is the KV cache full, so new requests cannot start? Fraction in use "
                f"(fullest part); dashed: the saturation alert's threshold "
                f"({RULES.engine_kv_cache_ratio:.0%}, with a queue that does not drain). "
                f"{ENGINE_NOTE}",
                "percentunit",
                (
                    Target(
                        f"namespace_model:infermeter_engine_kv_cache_usage_ratio:max{{{NME}}}",
                        "{{model}}",
                    ),
                    Target(f"vector({RULES.engine_kv_cache_ratio:g})", "alert threshold"),
                ),
                styles=(SeriesStyle("threshold$", dashed=True, color="red"),),
                min=0,
                max=1,
            ),
            Panel(
                "Requests running",
                f"How big is the batch the engine runs? {ENGINE_NOTE}",
                "short",
                (
                    Target(
                        f"namespace_model:infermeter_engine_requests_running:sum{{{NME}}}",
                        "{{model}} running",
                    ),
                ),
                width=8,
                min=0,
            ),
            Panel(
                "Prefix cache hit ratio",
                "How much prefill does the prefix cache save? Prompt tokens found in the "
                f"engine's prefix cache over those looked up ({W} windows). {ENGINE_NOTE}",
                "percentunit",
                (
                    Target(
                        f"namespace_model:infermeter_engine_prefix_cache_hits:ratio_rate{W}"
                        f"{{{NME}}}",
                        "{{model}}",
                    ),
                ),
                width=8,
                min=0,
                max=1,
            ),
            Panel(
                "Preemptions",
                "Is the engine evicting running requests to make room in the KV cache "
                f"(which also slows ITL)? Preemptions per second ({W} windows). {ENGINE_NOTE}",
                "short",
                (
                    Target(
                        f"namespace_model:infermeter_engine_preemptions:rate{W}{{{NME}}}",
                        "{{model}}",
                    ),
                ),
                width=8,
                min=0,
            ),
        ),
    )


def inference() -> Dashboard:
    traffic = Row(
        "Traffic",
        (
            Panel(
                "Requests by status code",
                "How much traffic arrives, and is it succeeding? Requests per second by the "
                "HTTP status sent to the client (499: the client left first).",
                "reqps",
                (
                    Target(
                        f"sum by (code) (rate(infermeter_requests_total{{{INF}}}{RI}))", "{{code}}"
                    ),
                ),
                width=8,
                stack=True,
                fill=20,
            ),
            Panel(
                "Errors by type",
                "What is failing: the upstream, the stream, the clients or the sidecar? "
                "Failed requests per second by error_type.",
                "reqps",
                (
                    Target(
                        f"sum by (error_type) (rate(infermeter_request_errors_total{{{INF}}}{RI}))",
                        "{{error_type}}",
                    ),
                ),
                width=8,
                stack=True,
                fill=20,
            ),
            Panel(
                "Requests in flight",
                "How many requests is the server carrying right now? A plateau with no "
                "completions means a hung server.",
                "short",
                (Target(f"sum by (model) (infermeter_requests_in_flight{{{INF}}})", "{{model}}"),),
                width=8,
                min=0,
            ),
        ),
    )
    latency = Row(
        "Latency",
        (
            _latency(
                "Time to first token (TTFT)",
                "infermeter_time_to_first_token_seconds",
                "How long do users wait for the first token?",
            ),
            _latency(
                "Inter-token latency (ITL)",
                "infermeter_inter_token_latency_seconds",
                "Does the stream flow smoothly once it started?",
            ),
            _latency(
                "Time per output token (TPOT)",
                "infermeter_time_per_output_token_seconds",
                "How fast is decoding, per request?",
            ),
            _latency(
                "End-to-end latency (E2E)",
                "infermeter_request_duration_seconds",
                "How long does a whole request take?",
            ),
            Panel(
                "TTFT distribution",
                "Is slow TTFT everyone or a tail? Streaming requests per TTFT bucket "
                "(a second band above the main one is a queue or a cold path).",
                "s",
                (
                    Target(
                        "sum by (le) (increase(infermeter_time_to_first_token_seconds_bucket"
                        f"{{{INF}}}{RI}))",
                        "{{le}}",
                        format="heatmap",
                    ),
                ),
                kind="heatmap",
            ),
            Panel(
                "TTFT p99 by pod",
                "Is one replica slower than the others? p99 TTFT per pod, from the buckets.",
                "s",
                (
                    Target(
                        "histogram_quantile(0.99, sum by (pod, le) (rate("
                        f"infermeter_time_to_first_token_seconds_bucket{{{INF}}}{RI})))",
                        "{{pod}}",
                    ),
                ),
                min=0,
            ),
        ),
    )
    saturation = _saturation()
    tokens = Row(
        "Tokens and goodput",
        (
            Panel(
                "Tokens per second",
                "How much work flows through? Input (prompt) and output tokens per second per "
                "model; output includes estimates where the upstream sent no usage report.",
                TOKENS_PER_SECOND,
                (
                    Target(
                        f"namespace_model:infermeter_prompt_tokens:rate{W}{{{NM}}}",
                        "{{model}} input",
                    ),
                    Target(
                        f"namespace_model:infermeter_output_tokens:rate{W}{{{NM}}}",
                        "{{model}} output",
                    ),
                ),
                width=8,
                min=0,
            ),
            Panel(
                "Tokens per request",
                "How big are requests and answers? p50 and p99 prompt and output tokens per "
                "request (prompt sizes need upstream usage reports).",
                "short",
                (
                    *_quantiles("infermeter_request_prompt_tokens", "", "input"),
                    *_quantiles("infermeter_request_completion_tokens", "", "output"),
                ),
                width=8,
                log_scale=True,
            ),
            Panel(
                "Output tokens per request distribution",
                "Did the mix of answer lengths change? Requests per output-token bucket.",
                "short",
                (
                    Target(
                        "sum by (le) (increase(infermeter_request_completion_tokens_bucket"
                        f"{{{INF}}}{RI}))",
                        "{{le}}",
                        format="heatmap",
                    ),
                ),
                kind="heatmap",
                width=8,
            ),
            Panel(
                "Goodput (SLO attainment) and errors",
                "What share of requests got good service? Goodput: succeeded and met every "
                "configured SLO (--slo-ttft, --slo-tpot, --slo-e2e); errors: failed outright.",
                "percentunit",
                (
                    Target(
                        f"namespace_model:infermeter_goodput:ratio_rate{W}{{{NM}}}",
                        "{{model}} goodput",
                    ),
                    Target(
                        f"namespace_model:infermeter_request_errors:ratio_rate{W}{{{NM}}}",
                        "{{model}} errors",
                    ),
                ),
                min=0,
                max=1,
                styles=(SeriesStyle(" errors$", color="red"),),
                width=24,
                height=7,
            ),
        ),
    )
    sidecar = Row(
        "Sidecar health: can the measurements be trusted?",
        (
            Panel(
                "Event-loop lag",
                "Is the sidecar itself late? When its loop lags, the latencies above include "
                f"its own delay. p50/p99 per pod; dashed: the alert threshold "
                f"({RULES.loop_lag_seconds:g} s).",
                "s",
                (
                    *_quantiles("infermeter_event_loop_lag_seconds", "pod, ", "{{pod}}", NP),
                    Target(f"vector({RULES.loop_lag_seconds:g})", "alert threshold"),
                ),
                width=8,
                styles=(SeriesStyle("threshold$", dashed=True, color="red"),),
                log_scale=True,
            ),
            Panel(
                "Event-loop tasks",
                "Is the sidecar leaking? asyncio tasks alive (about one per open request): a "
                "steady climb with flat traffic is a leak.",
                "short",
                (Target(f"sum by (pod) (infermeter_event_loop_tasks{{{NP}}})", "{{pod}}"),),
                width=8,
                min=0,
            ),
            Panel(
                "Scrape and collector duration",
                "Is /metrics slow, or is NVML? Prometheus' scrape duration of each sidecar "
                "and the duration of each collector's last run.",
                "s",
                (
                    Target(
                        f"scrape_duration_seconds{{{NP}}} and on (instance, job) "
                        f"infermeter_build_info{{{NP}}}",
                        "{{pod}} scrape",
                    ),
                    Target(
                        f"max by (pod, collector) (infermeter_collector_duration_seconds{{{NP}}})",
                        "{{pod}} {{collector}}",
                    ),
                ),
                width=8,
                min=0,
            ),
        ),
    )
    return Dashboard(
        uid="infermeter-inference",
        title="infermeter / Inference",
        description="What users feel: traffic, errors, TTFT/ITL/TPOT/E2E against their "
        "baseline, tokens, goodput, and whether the sidecar's own measurements hold.",
        rows=(traffic, latency, saturation, tokens, sidecar),
        variables=VARIABLES,
    )


GPU_LEGEND = "{{pod}} GPU {{gpu}}"


def gpu() -> Dashboard:
    state = Row(
        "State",
        (
            Panel(
                "GPUs and NVML up",
                "Is every GPU answering, and can the sidecar read them at all? 1 per GPU "
                "(0: lost, its other series vanish) and NVML initialised per pod.",
                "none",
                (
                    Target(f"infermeter_gpu_up{{{NP}}}", GPU_LEGEND),
                    Target(f"infermeter_nvml_up{{{NP}}}", "{{pod}} NVML"),
                ),
                kind="state-timeline",
                width=18,
                height=6,
                mappings=(("1", "UP", "green"), ("0", "DOWN", "red")),
                thresholds=((None, "red"), (1, "green")),
            ),
            Panel(
                "GPUs lost",
                "How many GPUs report infermeter_gpu_up 0 right now?",
                "none",
                (Target(f"count(infermeter_gpu_up{{{NP}}} == 0) or vector(0)", "lost"),),
                kind="stat",
                width=6,
                height=6,
                thresholds=((None, "green"), (1, "red")),
            ),
        ),
    )
    load = Row(
        "Load and memory",
        (
            Panel(
                "GPU utilization",
                "Are the GPUs busy? Fraction of time a kernel ran, per GPU.",
                "percentunit",
                (Target(f"infermeter_gpu_utilization_ratio{{{NP}}}", GPU_LEGEND),),
                min=0,
                max=1,
            ),
            Panel(
                "Memory bandwidth busy",
                "Is decoding memory-bound? Fraction of time device memory was read or written.",
                "percentunit",
                (Target(f"infermeter_gpu_memory_utilization_ratio{{{NP}}}", GPU_LEGEND),),
                min=0,
                max=1,
            ),
            Panel(
                "Memory used vs total",
                "How close is each GPU to running out of memory? Used (solid) and installed "
                "(dashed); vLLM reserves ~90% by design.",
                "bytes",
                (
                    Target(f"infermeter_gpu_memory_used_bytes{{{NP}}}", f"{GPU_LEGEND} used"),
                    Target(f"infermeter_gpu_memory_total_bytes{{{NP}}}", f"{GPU_LEGEND} total"),
                ),
                styles=DASHED_LIMIT,
                min=0,
            ),
            Panel(
                "Energy per output token",
                "How much energy does a token cost? GPU joules per output token per pod "
                f"(recorded, {W} windows).",
                "joule",
                (
                    Target(
                        f"namespace_pod:infermeter_energy_per_output_token:joules{{{NP}}}",
                        "{{pod}}",
                    ),
                ),
                min=0,
            ),
        ),
    )
    thermal = Row(
        "Thermals, power and clocks",
        (
            Panel(
                "Temperature",
                "Is a GPU running hot? Core (solid) and memory/HBM (dashed) temperature; "
                f"the alert fires above {RULES.gpu_temperature_celsius:g} °C.",
                "celsius",
                (
                    Target(f"infermeter_gpu_temperature_celsius{{{NP}}}", f"{GPU_LEGEND} core"),
                    Target(
                        f"infermeter_gpu_memory_temperature_celsius{{{NP}}}",
                        f"{GPU_LEGEND} memory",
                    ),
                ),
                styles=DASHED_LIMIT,
            ),
            Panel(
                "Power vs limit",
                "Is a GPU power-capped? Board power draw (solid) and the enforced limit (dashed).",
                "watt",
                (
                    Target(f"infermeter_gpu_power_watts{{{NP}}}", f"{GPU_LEGEND} draw"),
                    Target(f"infermeter_gpu_power_limit_watts{{{NP}}}", f"{GPU_LEGEND} limit"),
                ),
                styles=DASHED_LIMIT,
                min=0,
            ),
            Panel(
                "Clocks",
                "Are the clocks where they should be? SM (solid) and memory (dashed) clock.",
                "hertz",
                (
                    Target(f'infermeter_gpu_clock_hertz{{{NP}, clock="sm"}}', f"{GPU_LEGEND} sm"),
                    Target(
                        f'infermeter_gpu_clock_hertz{{{NP}, clock="memory"}}',
                        f"{GPU_LEGEND} memory",
                    ),
                ),
                styles=DASHED_LIMIT,
                min=0,
            ),
            Panel(
                "Active throttle reasons",
                "Why are the clocks down? Each clock-event reason while it is active "
                "(gpu_idle is benign; thermal, power brake and hw_slowdown are not).",
                "none",
                (
                    Target(
                        "max by (pod, gpu, reason) "
                        f"(infermeter_gpu_clock_event_active{{{NP}}}) == 1",
                        f"{GPU_LEGEND} {{{{reason}}}}",
                    ),
                ),
                kind="state-timeline",
                mappings=(("1", "active", "orange"),),
                thresholds=((None, "orange"),),
            ),
        ),
    )
    errors = Row(
        "Hardware errors",
        (
            Panel(
                "XID errors",
                "Did the driver report a critical error? New XID events per GPU and code, and "
                "(dashed) the count since the sidecar started, where a first-ever event shows "
                "(79: fell off the bus, 48/63/64: memory, 13/31/43: application faults).",
                "short",
                (
                    Target(
                        "sum by (pod, gpu, xid) "
                        f"(increase(infermeter_gpu_xid_errors_total{{{NP}}}{RI}))",
                        f"{GPU_LEGEND} XID {{{{xid}}}} new",
                    ),
                    Target(
                        f"max by (pod, gpu, xid) (infermeter_gpu_xid_errors_total{{{NP}}})",
                        f"{GPU_LEGEND} XID {{{{xid}}}} since start",
                    ),
                ),
                styles=(SeriesStyle("since start$", dashed=True),),
                width=8,
                min=0,
            ),
            Panel(
                "ECC errors",
                "Is GPU memory failing? New corrected and uncorrected ECC errors per GPU "
                "(uncorrected: results may be wrong, drain the GPU).",
                "short",
                (
                    Target(
                        "sum by (pod, gpu, type) "
                        f"(increase(infermeter_gpu_ecc_errors_total{{{NP}}}{RI}))",
                        f"{GPU_LEGEND} {{{{type}}}}",
                    ),
                ),
                width=8,
                min=0,
                styles=(SeriesStyle("uncorrected$", color="red"),),
            ),
            Panel(
                "PCIe replays and row remaps",
                "Is the link or the memory degrading? New PCIe replays and remapped rows.",
                "short",
                (
                    Target(
                        "sum by (pod, gpu) "
                        f"(increase(infermeter_gpu_pcie_replays_total{{{NP}}}{RI}))",
                        f"{GPU_LEGEND} PCIe replays",
                    ),
                    Target(
                        "sum by (pod, gpu, cause) "
                        f"(increase(infermeter_gpu_remapped_rows_total{{{NP}}}{RI}))",
                        f"{GPU_LEGEND} remapped {{{{cause}}}}",
                    ),
                ),
                width=8,
                min=0,
            ),
        ),
    )
    return Dashboard(
        uid="infermeter-gpu",
        title="infermeter / GPU",
        description="Per GPU from NVML: health, load, memory, thermals, power, clocks and "
        "throttling, hardware errors, energy per token.",
        rows=(state, load, thermal, errors),
        variables=VARIABLES,
    )


PER_HOUR = "suffix: /h"


def _spend(label: str) -> Panel:
    """Spend per hour by one attribution label (cluster-wide: budgets are per team)."""
    return Panel(
        f"Spend by {label}",
        f"Who spends what? Spend per hour by {label} (exact and estimated, all namespaces), "
        "from the prices file (--prices) and the --attribute header; none: requests without "
        "the header.",
        PER_HOUR,
        (
            Target(
                f"{label}_currency:infermeter_spend:rate{W} * 3600",
                f"{{{{{label}}}}} ({{{{currency}}}})",
            ),
        ),
        width=8,
        min=0,
        stack=True,
        fill=20,
    )


def cost_row() -> Row:
    """Spend per team, feature and model; unit costs; budgets used (--prices, --attribute)."""
    b = RULES.budget_label
    nmc = f"namespace_model_currency:infermeter_{{}}:{{}}{W}{{{{{NM}}}}}"
    return Row(
        "Cost",
        (
            *(_spend(label) for label in RULES.attribution_labels),
            Panel(
                "Spend by model",
                "Which models cost the most? Spend per hour per model (exact and estimated).",
                PER_HOUR,
                (Target(nmc.format("spend", "rate") + " * 3600", "{{model}} ({{currency}})"),),
                width=8,
                min=0,
                stack=True,
                fill=20,
            ),
            Panel(
                "Cost per request",
                "What does one request cost? Spend over requests per model (all requests, "
                "failed ones included).",
                "short",
                (Target(nmc.format("cost_per_request", "ratio_rate"), "{{model}} ({{currency}})"),),
                width=8,
                min=0,
            ),
            Panel(
                "Cost per million tokens (prices)",
                "What does a million tokens cost at the configured prices? Spend over prompt "
                "and output tokens per model (the GPU-hour figure is in Capacity and cost).",
                PER_MILLION_TOKENS,
                (
                    Target(
                        nmc.format("cost_per_million_tokens", "ratio_rate"),
                        "{{model}} ({{currency}})",
                    ),
                ),
                width=8,
                min=0,
            ),
            Panel(
                f"Monthly budget used by {b}",
                f"How much of its monthly budget has each {b} spent this month? Month-to-date "
                f"spend over the budget (rule parameter); alerts at 50% and 80%, and a forecast "
                "when the current rate would overspend.",
                "percentunit",
                (
                    Target(
                        f"{b}_currency:infermeter_spend:month_to_date / on ({b}, currency) "
                        f"{b}_currency:infermeter_spend_budget:monthly",
                        f"{{{{{b}}}}}",
                    ),
                ),
                kind="gauge",
                width=24,
                height=6,
                min=0,
                max=1,
                thresholds=((None, "green"), (0.5, "orange"), (0.8, "red")),
            ),
        ),
    )


def availability_row() -> Row:
    """The availability SLO: objective, error budget left, burn rate against the pages."""
    objective = RULES.availability_objective
    budget = round(1 - objective, 12)
    window = RULES.availability_window
    ratio = f"namespace_model:infermeter_availability_errors:ratio_rate{{}}{{{{{NM}}}}}"
    return Row(
        "Availability",
        (
            Panel(
                "Objective",
                f"What availability is promised? Share of requests that must not fail over "
                f"{window} (rule parameter availability_objective).",
                "percentunit",
                (Target("infermeter:availability_objective:ratio", "objective"),),
                kind="stat",
                width=4,
                height=7,
            ),
            Panel(
                "Error budget left",
                f"How much of the {window} error budget ({budget:g} of requests) is left per "
                "model? Below 0: the objective is missed.",
                "percentunit",
                (
                    Target(
                        "namespace_model:infermeter_availability_error_budget:remaining_"
                        f"{window}{{{NM}}}",
                        "{{model}}",
                    ),
                ),
                kind="stat",
                width=6,
                height=7,
                thresholds=((None, "red"), (0.0, "orange"), (0.25, "green")),
            ),
            Panel(
                "Burn rate",
                "How fast is the error budget burning? Errors (5xx, connect and timeouts, "
                "stream errors and truncations, 429; not 499 or the clients' own 4xx) over the "
                "budget's pace, per model; dashed: where the page fires (14.4x over 1 h and "
                "5 m, 6x over 6 h and 30 m).",
                "short",
                (
                    Target(f"{ratio.format('1h')} / {budget:g}", "{{model}} 1h"),
                    Target(f"{ratio.format('5m')} / {budget:g}", "{{model}} 5m"),
                    Target("vector(14.4)", "page 14.4x"),
                    Target("vector(6)", "page 6x"),
                ),
                width=14,
                height=7,
                min=0,
                styles=(SeriesStyle(" 5m$", dashed=True), SeriesStyle("^page", color="red")),
                log_scale=True,
            ),
        ),
    )


def overview() -> Dashboard:
    p99_ttft = f"namespace_model:infermeter_time_to_first_token_seconds:p99_{W}{{{NM}}}"
    now = Row(
        "Now",
        (
            Panel(
                "Requests per second",
                "How much traffic is there right now?",
                "reqps",
                (Target(f"sum(namespace_model:infermeter_requests:rate{W}{{{NM}}})", "req/s"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Error ratio",
                "What share of requests fails right now?",
                "percentunit",
                (
                    Target(
                        f"sum(namespace_model:infermeter_request_errors:rate{W}{{{NM}}}) / "
                        f"sum(namespace_model:infermeter_requests:rate{W}{{{NM}}})",
                        "errors",
                    ),
                ),
                kind="stat",
                width=4,
                height=4,
                thresholds=((None, "green"), (0.01, "orange"), (RULES.error_ratio, "red")),
            ),
            Panel(
                "Goodput",
                "What share of requests meets every SLO right now?",
                "percentunit",
                (
                    Target(
                        f"sum(rate(infermeter_goodput_requests_total{{{INF}}}{RI})) / "
                        f"sum(rate(infermeter_requests_total{{{INF}}}{RI}))",
                        "goodput",
                    ),
                ),
                kind="stat",
                width=4,
                height=4,
                thresholds=((None, "red"), (0.9, "orange"), (0.99, "green")),
            ),
            Panel(
                "Worst TTFT p99",
                "How long does the slowest model make users wait for a first token?",
                "s",
                (Target(f"max({p99_ttft})", "p99"),),
                kind="stat",
                width=4,
                height=4,
                thresholds=((None, "green"), (RULES.slo_ttft_seconds, "red")),
            ),
            Panel(
                "GPUs up",
                "How many GPUs answer NVML right now?",
                "none",
                (Target(f"sum(infermeter_gpu_up{{{NP}}})", "up"),),
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Alerts firing",
                "How many infermeter alerts fire right now?",
                "none",
                (
                    Target(
                        'count(ALERTS{alertname=~"Infermeter.*", alertstate="firing", '
                        'namespace=~"$namespace"}) or vector(0)',
                        "firing",
                    ),
                ),
                kind="stat",
                width=4,
                height=4,
                thresholds=((None, "green"), (1, "red")),
            ),
        ),
    )
    side_by_side = Row(
        "Latency next to the engine queue, GPU utilization and load",
        (
            Panel(
                "p99 TTFT and ITL",
                "Are users waiting? Recorded p99 TTFT (solid) and inter-token latency (dashed) "
                "per model; compare with the load and GPU panels beside it.",
                "s",
                (
                    Target(p99_ttft, "{{model}} TTFT"),
                    Target(
                        f"namespace_model:infermeter_inter_token_latency_seconds:p99_{W}{{{NM}}}",
                        "{{model}} ITL",
                    ),
                ),
                width=6,
                min=0,
                styles=(SeriesStyle(" ITL$", dashed=True),),
                log_scale=True,
            ),
            Panel(
                "Engine queue and KV cache",
                "Is TTFT up because requests queue in the engine? Requests waiting (solid, "
                "left) and KV cache in use (dashed, as a count of percent points) per model, "
                "from the engine's own /metrics.",
                "short",
                (
                    Target(
                        f"namespace_model:infermeter_engine_requests_waiting:sum{{{NME}}}",
                        "{{model}} waiting",
                    ),
                    Target(
                        "100 * namespace_model:infermeter_engine_kv_cache_usage_ratio:max"
                        f"{{{NME}}}",
                        "{{model}} KV cache %",
                    ),
                ),
                width=6,
                min=0,
                styles=(SeriesStyle(" KV cache %$", dashed=True),),
            ),
            Panel(
                "GPU utilization per pod",
                "Is latency rising because the GPUs are saturated? Mean GPU utilization per pod.",
                "percentunit",
                (Target(f"avg by (pod) (infermeter_gpu_utilization_ratio{{{NP}}})", "{{pod}}"),),
                width=6,
                min=0,
                max=1,
            ),
            Panel(
                "Load: requests in flight",
                "Is latency rising because of load? Concurrent requests per pod.",
                "short",
                (Target(f"sum by (pod) (infermeter_requests_in_flight{{{INF}}})", "{{pod}}"),),
                width=6,
                min=0,
            ),
        ),
    )
    per_gpu = (
        f"namespace_pod:infermeter_output_tokens:rate{W}{{{NP}}} / on (namespace, pod) "
        f"namespace_pod:infermeter_gpus:count{{{NP}}}"
    )
    capacity = Row(
        "Capacity and cost",
        (
            Panel(
                "Output tokens per second per GPU",
                "How much does each GPU deliver? Output tokens per second divided by the "
                "pod's GPUs: the capacity figure to plan replicas with.",
                TOKENS_PER_SECOND,
                (Target(per_gpu, "{{pod}}"),),
                width=8,
                min=0,
            ),
            Panel(
                "Cost per million output tokens",
                "What does a million tokens cost? GPU-hours at the rules' --gpu-hourly-price "
                f"({RULES.gpu_hourly_price:g} per GPU-hour, in its currency) over output tokens.",
                PER_MILLION_TOKENS,
                (
                    Target(
                        f"namespace_pod:infermeter_cost_per_million_output_tokens:currency{{{NP}}}",
                        "{{pod}}",
                    ),
                ),
                width=8,
                min=0,
            ),
            Panel(
                "GPU power per pod",
                "How much power does each pod draw? Mean GPU power from the energy counters.",
                "watt",
                (Target(f"namespace_pod:infermeter_gpu_power:watts_rate{W}{{{NP}}}", "{{pod}}"),),
                width=8,
                min=0,
            ),
        ),
    )
    alerts = Row(
        "Alerts",
        (
            Panel(
                "Active alerts",
                "What is Prometheus alerting on? infermeter alerts pending or firing, with "
                "their labels; each has a runbook_url annotation.",
                "none",
                (
                    Target(
                        'ALERTS{alertname=~"Infermeter.*", namespace=~"$namespace"}',
                        "{{alertname}}",
                        format="table",
                        instant=True,
                    ),
                ),
                kind="table",
                width=24,
                height=6,
            ),
        ),
    )
    return Dashboard(
        uid="infermeter-overview",
        title="infermeter / Overview",
        description="Capacity review and first look in an incident: latency beside the "
        "engine queue, GPU utilization and load, tokens per GPU, cost per million tokens, "
        "spend by team, feature and model against budgets, the availability SLO, active alerts.",
        rows=(now, side_by_side, capacity, cost_row(), availability_row(), alerts),
        variables=VARIABLES,
    )


DASHBOARDS: dict[str, Dashboard] = {
    "infermeter-overview.json": overview(),
    "infermeter-inference.json": inference(),
    "infermeter-gpu.json": gpu(),
}
"""File name in dashboards/ -> dashboard."""
