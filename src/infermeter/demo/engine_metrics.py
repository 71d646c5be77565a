"""The demo upstream's own /metrics, shaped like vLLM's (V1 engine names and labels).

The figures follow the load, so `make demo` shows the saturation panels move: each model
has room for `kv_capacity` sequences in its KV cache; running requests fill it, requests
beyond it wait, and each arrival at a full cache preempts a running sequence, as vLLM does
under memory pressure. Only the figures are simulated: timing is the demo's TTFT and ITL.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARED_PREFIX_TOKENS = 32  # a system prompt every request of a model shares
MAX_MODELS = 64


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class _Model:
    in_flight: int = 0
    queries: int = 0
    hits: int = 0
    preemptions: int = 0


class EngineFigures:
    def __init__(self) -> None:
        self._models: dict[str, _Model] = {}

    def admit(self, model: str, prompt_tokens: int, kv_capacity: int) -> None:
        state = self._models.setdefault(self._name(model), _Model())
        if state.in_flight >= kv_capacity:
            state.preemptions += 1
        if state.queries:  # the first request of a model fills the prefix cache
            state.hits += min(prompt_tokens, SHARED_PREFIX_TOKENS)
        state.queries += prompt_tokens
        state.in_flight += 1

    def release(self, model: str) -> None:
        self._models[self._name(model)].in_flight -= 1

    def _name(self, model: str) -> str:
        """Clients choose model names: past MAX_MODELS they share one series."""
        if model in self._models or len(self._models) < MAX_MODELS:
            return model
        return "_other"

    def render(self, kv_capacity: int) -> str:
        """Prometheus text, one series per model, as vLLM 0.11 labels them."""
        rows: dict[str, list[str]] = {name: [] for name, _, _ in _FAMILIES}
        for model, state in sorted(self._models.items()):
            labels = f'{{engine="0",model_name="{_escape(model)}"}}'
            running = min(state.in_flight, kv_capacity)
            values = {
                "vllm:num_requests_running": running,
                "vllm:num_requests_waiting": state.in_flight - running,
                "vllm:kv_cache_usage_perc": running / kv_capacity,
                "vllm:prefix_cache_queries": state.queries,
                "vllm:prefix_cache_hits": state.hits,
                "vllm:num_preemptions": state.preemptions,
            }
            for name, kind, _ in _FAMILIES:
                sample = f"{name}_total" if kind == "counter" else name
                rows[name].append(f"{sample}{labels} {float(values[name])!r}")
        out = []
        for name, kind, help_text in _FAMILIES:
            out += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *rows[name]]
        return "\n".join(out) + "\n"


_FAMILIES = (
    ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches."),
    ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed."),
    ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage."),
    ("vllm:prefix_cache_queries", "counter", "Prefix cache queries, in tokens."),
    ("vllm:prefix_cache_hits", "counter", "Prefix cache hits, in tokens."),
    ("vllm:num_preemptions", "counter", "Cumulative number of preemption from the engine."),
)
