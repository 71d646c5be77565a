"""Engine saturation figures under one set of names, whatever the engine and its version.

Pure: parsed Prometheus families in, figures out. Each engine's table lists, per figure, the
sample names that carry it, newest spelling first (vLLM renamed `gpu_cache_usage_perc` to
`kv_cache_usage_perc`); the first one present wins. A figure the engine does not expose is
absent from the result, never zero. The README's mapping table documents the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from prometheus_client.metrics_core import Metric

from infermeter.labelcap import LabelCap

Figure = Literal[
    "requests_waiting",
    "requests_running",
    "kv_cache_usage",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "preemptions",
]
FIGURES: tuple[Figure, ...] = get_args(Figure)
# How several samples of one figure and model combine (vLLM data-parallel ranks, SGLang
# tp/dp ranks, Triton model versions, models folded into _other): queues and counters add
# up, a cache is as full as its fullest part.
_MAX_FIGURES = frozenset({"kv_cache_usage"})

EngineName = Literal["vllm", "sglang", "tgi", "llamacpp", "triton"]
OTHER_MODEL = "_other"
MAX_LABEL_LENGTH = 200
_UNSAFE = re.compile(r"[^\x20-\x7e]")  # keep printable ASCII; anything else becomes "_"


@dataclass(frozen=True, slots=True)
class EngineTable:
    name: EngineName
    prefix: str  # every metric of the engine starts with it: how it is recognised
    model_label: str | None  # the engine's label naming the model; None: one unnamed model
    sources: Mapping[Figure, tuple[str, ...]]  # sample names, preferred first
    version_path: str | None = None  # JSON endpoint on the metrics origin that says a version
    version_key: str = "version"


ENGINES: tuple[EngineTable, ...] = (
    EngineTable(
        "vllm",
        "vllm:",
        "model_name",
        {
            "requests_waiting": ("vllm:num_requests_waiting",),
            "requests_running": ("vllm:num_requests_running",),
            # a 0-1 fraction despite "perc"; renamed in 0.9/0.10, both exported meanwhile
            "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
            "prefix_cache_queries": (
                "vllm:prefix_cache_queries_total",
                "vllm:gpu_prefix_cache_queries_total",
            ),
            "prefix_cache_hits": (
                "vllm:prefix_cache_hits_total",
                "vllm:gpu_prefix_cache_hits_total",
            ),
            "preemptions": ("vllm:num_preemptions_total",),
        },
        version_path="/version",
    ),
    EngineTable(
        "sglang",
        "sglang:",
        "model_name",
        {
            "requests_waiting": ("sglang:num_queue_reqs",),
            "requests_running": ("sglang:num_running_reqs",),
            "kv_cache_usage": ("sglang:token_usage",),  # used / total KV pool tokens
            "prefix_cache_queries": ("sglang:prompt_tokens_total",),
            "prefix_cache_hits": ("sglang:cached_tokens_total",),
            "preemptions": ("sglang:num_retracted_requests_total",),
        },
        version_path="/get_server_info",
    ),
    EngineTable(
        "tgi",
        "tgi_",
        None,
        {
            "requests_waiting": ("tgi_queue_size",),
            "requests_running": ("tgi_batch_current_size",),
        },
        version_path="/info",
    ),
    EngineTable(
        "llamacpp",
        "llamacpp:",
        None,
        {
            "requests_waiting": ("llamacpp:requests_deferred",),
            "requests_running": ("llamacpp:requests_processing",),
            "kv_cache_usage": ("llamacpp:kv_cache_usage_ratio",),  # older builds only
        },
        version_path="/props",
        version_key="build_info",
    ),
    EngineTable(
        "triton",
        "nv_inference_",
        "model",
        {"requests_waiting": ("nv_inference_pending_request_count",)},
    ),
)
BY_NAME: dict[str, EngineTable] = {table.name: table for table in ENGINES}
WANTED = frozenset(name for t in ENGINES for names in t.sources.values() for name in names)
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)[{ \t]")


def select(text: str) -> tuple[str, frozenset[str]]:
    """The sample lines of the names re-exported, and every metric name present.

    A big exposition is mostly histograms nobody re-exports; handing only the wanted lines
    to the (pure-Python) parser keeps a fetch's CPU small. Every sample line must still start
    with a metric name, or the text is not Prometheus text (ValueError): an HTML error page
    answered with 200 is a failed fetch, not an engine without figures.
    """
    kept: list[str] = []
    names: set[str] = set()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a sample line: {line[:80]!r}")
        name = match.group(1)
        names.add(name)
        if name in WANTED:
            kept.append(line)
    return "\n".join(kept) + "\n", frozenset(names)


Samples = Mapping[str, list[tuple[dict[str, str], float]]]


def flatten(families: Iterable[Metric]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (counters keep their `_total`); NaN and `_created` dropped."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name.endswith("_created") or math.isnan(sample.value):
                continue
            out.setdefault(sample.name, []).append((sample.labels, float(sample.value)))
    return out


def detect(names: Iterable[str]) -> EngineTable | None:
    """The engine whose metric names are present; the one with most matches wins."""
    present = list(names)
    best, best_hits = None, 0
    for table in ENGINES:
        hits = sum(1 for name in present if name.startswith(table.prefix))
        if hits > best_hits:
            best, best_hits = table, hits
    return best


def sanitise(value: str) -> str:
    """An engine-supplied label value, made printable and bounded."""
    return _UNSAFE.sub("_", value[:MAX_LABEL_LENGTH])


class ModelCap:
    """The first `limit` model names seen keep their name; later ones become `_other`.

    Like the proxy's cap, it remembers across fetches, so a name keeps its series. With
    `shared` (the proxy's own labeller), engine and proxy draw from one set of names, so
    the `model` label has at most --max-models values plus `_other` across all metrics.
    """

    def __init__(self, limit: int, shared: Callable[[str], str] | None = None) -> None:
        self._cap: Callable[[str], str] = shared or LabelCap(limit, OTHER_MODEL)

    def __call__(self, raw: str) -> str:
        model = sanitise(raw)
        if not model:
            return ""  # an engine that names no model
        return self._cap(model)


@dataclass(frozen=True, slots=True)
class FigureSample:
    figure: Figure
    model: str  # "" when the engine serves one model it does not name
    value: float


def figures(table: EngineTable, samples: Samples, cap: ModelCap) -> tuple[FigureSample, ...]:
    """Every figure the engine provides, one value per (figure, model)."""
    values: dict[tuple[Figure, str], float] = {}
    for figure in FIGURES:
        found = next((n for n in table.sources.get(figure, ()) if n in samples), None)
        if found is None:
            continue
        combine = max if figure in _MAX_FIGURES else _add
        for labels, value in samples[found]:
            raw = labels.get(table.model_label, "") if table.model_label else ""
            key = (figure, cap(raw))
            values[key] = combine(values[key], value) if key in values else value
    return tuple(FigureSample(f, model, v) for (f, model), v in sorted(values.items()))


def _add(a: float, b: float) -> float:
    return a + b


def version_from(table: EngineTable, document: object) -> str:
    """The version an engine's JSON info endpoint reports, sanitised; "" when it says none."""
    if not isinstance(document, dict):
        return ""
    value = document.get(table.version_key)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return ""
    return sanitise(str(value))
