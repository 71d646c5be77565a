"""Detection and mapping of every engine's /metrics, from fixtures written after each
engine's documented metric names (tests/fixtures/engines/*.prom, sources in their headers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infermeter.engine import mapping
from infermeter.engine.fetcher import FetchError, Parsed, parse

FIXTURES = Path(__file__).parents[1] / "fixtures" / "engines"
L8B = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-1.5B-Instruct"

# fixture -> (engine, {(figure, model): value}): every figure the engine provides, nothing else
EXPECTED: dict[str, tuple[str, dict[tuple[str, str], float]]] = {
    "vllm-0.6": ("vllm", {
        ("requests_waiting", L8B): 7, ("requests_running", L8B): 24,
        ("kv_cache_usage", L8B): 0.9312, ("preemptions", L8B): 3,
    }),
    "vllm-0.9": ("vllm", {
        ("requests_waiting", QWEN): 2, ("requests_running", QWEN): 12,
        ("kv_cache_usage", QWEN): 0.5, ("prefix_cache_queries", QWEN): 4096,
        ("prefix_cache_hits", QWEN): 1024, ("preemptions", QWEN): 0,
    }),
    "vllm-0.11": ("vllm", {
        ("requests_waiting", "llama-3.1-70b"): 13, ("requests_running", "llama-3.1-70b"): 125,
        ("kv_cache_usage", "llama-3.1-70b"): 0.97,
        ("prefix_cache_queries", "llama-3.1-70b"): 150000,
        ("prefix_cache_hits", "llama-3.1-70b"): 75000, ("preemptions", "llama-3.1-70b"): 22,
    }),
    "sglang-0.4": ("sglang", {
        ("requests_waiting", L8B): 2759, ("requests_running", L8B): 31,
        ("kv_cache_usage", L8B): 0.28, ("prefix_cache_queries", L8B): 8128902,
    }),
    "sglang-0.5": ("sglang", {
        ("requests_waiting", "qwen3-32b"): 0, ("requests_running", "qwen3-32b"): 8,
        ("kv_cache_usage", "qwen3-32b"): 0.12, ("prefix_cache_queries", "qwen3-32b"): 5000,
        ("prefix_cache_hits", "qwen3-32b"): 2000, ("preemptions", "qwen3-32b"): 2,
    }),
    "tgi": ("tgi", {("requests_waiting", ""): 5, ("requests_running", ""): 32}),
    "llamacpp-old": ("llamacpp", {
        ("requests_waiting", ""): 1, ("requests_running", ""): 2, ("kv_cache_usage", ""): 0.41,
    }),
    "llamacpp-new": ("llamacpp", {("requests_waiting", ""): 0, ("requests_running", ""): 4}),
    "triton": ("triton", {
        ("requests_waiting", "ensemble"): 0, ("requests_waiting", "tensorrt_llm"): 7,
    }),
}  # fmt: skip


def load(name: str) -> Parsed:
    return parse((FIXTURES / f"{name}.prom").read_bytes())


def test_every_fixture_is_covered() -> None:
    assert {p.stem for p in FIXTURES.glob("*.prom")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detect_and_map(name: str) -> None:
    engine, expected = EXPECTED[name]
    parsed = load(name)
    table = mapping.detect(parsed.names)
    assert table is not None
    assert table.name == engine
    found = mapping.figures(table, parsed.samples, mapping.ModelCap(64))
    assert {(f.figure, f.model): f.value for f in found} == pytest.approx(expected)


def test_vllm_prefers_the_new_name_when_both_are_present() -> None:
    samples = load("vllm-0.9").samples
    samples["vllm:gpu_cache_usage_perc"][0] = ({"model_name": QWEN}, 0.25)
    found = mapping.figures(mapping.BY_NAME["vllm"], samples, mapping.ModelCap(64))
    assert [f.value for f in found if f.figure == "kv_cache_usage"] == [0.5]


def test_vllm_percentages_are_fractions() -> None:
    """vLLM's *_perc gauges hold 0-1 ("1 means 100 percent"): re-exported as they are."""
    for name in ("vllm-0.6", "vllm-0.9", "vllm-0.11"):
        found = mapping.figures(mapping.BY_NAME["vllm"], load(name).samples, mapping.ModelCap(64))
        assert all(0 <= f.value <= 1 for f in found if f.figure == "kv_cache_usage")


def test_unknown_metrics_are_not_an_engine() -> None:
    parsed = parse(b"# TYPE node_load1 gauge\nnode_load1 0.5\n")
    assert parsed.names == {"node_load1"}
    assert mapping.detect(parsed.names) is None
    assert mapping.detect(()) is None


def test_a_forced_engine_maps_only_its_own_names() -> None:
    found = mapping.figures(mapping.BY_NAME["tgi"], load("vllm-0.11").samples, mapping.ModelCap(64))
    assert found == ()


def test_model_names_are_capped_and_sanitised() -> None:
    lines = ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [f'vllm:num_requests_waiting{{model_name="m{i}"}} 1' for i in range(5)]
    lines.append('vllm:num_requests_waiting{model_name="bad\\nname\\u00e9' + "x" * 300 + '"} 1')
    cap = mapping.ModelCap(3)
    samples = parse("\n".join(lines).encode() + b"\n").samples
    found = mapping.figures(mapping.BY_NAME["vllm"], samples, cap)
    assert {f.model: f.value for f in found} == {"m0": 1, "m1": 1, "m2": 1, "_other": 3}
    assert mapping.sanitise("a\nb\x00é") == "a_b__"
    assert len(mapping.sanitise("y" * 1000)) == mapping.MAX_LABEL_LENGTH
    assert cap("m4") == "_other"  # the cap remembers across fetches
    assert cap("m1") == "m1"


def test_nan_values_are_left_out() -> None:
    samples = parse(
        b"# TYPE tgi_queue_size gauge\ntgi_queue_size NaN\ntgi_batch_current_size 3\n"
    ).samples
    found = mapping.figures(mapping.BY_NAME["tgi"], samples, mapping.ModelCap(64))
    assert [(f.figure, f.value) for f in found] == [("requests_running", 3.0)]


@pytest.mark.parametrize(
    "body",
    [
        b'vllm:num_requests_waiting{model_name="m"} not-a-number\n',
        b'vllm:num_requests_waiting{model_name="m 1\n',
        b"\xff\xfe\x00garbage",
        b"<html><body>Service Unavailable</body></html>\n",
        b'tgi_queue_size{="b"} 1\n',
        b"{} 1\n",
    ],
)
def test_malformed_text_is_a_failed_fetch(body: bytes) -> None:
    with pytest.raises(FetchError):
        parse(body)


@pytest.mark.parametrize(
    ("engine", "document", "version"),
    [
        ("vllm", {"version": "0.11.0"}, "0.11.0"),
        ("tgi", {"model_id": "x", "version": "3.3.4"}, "3.3.4"),
        ("llamacpp", {"build_info": "b6000-abc"}, "b6000-abc"),
        ("vllm", {"version": {"nested": 1}}, ""),
        ("vllm", ["0.1"], ""),
        ("vllm", {"version": "1\n2"}, "1_2"),
        ("vllm", {"version": True}, ""),
    ],
)
def test_version_from_info_documents(engine: str, document: object, version: str) -> None:
    assert mapping.version_from(mapping.BY_NAME[engine], document) == version


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet='vlm:_{}="# \n\\0.1eE+-TYPEgauge', max_size=200))
def test_any_body_parses_or_fails_cleanly(body: bytes | str) -> None:
    """Whatever an engine sends: samples, or a FetchError; nothing else escapes."""
    data = body.encode() if isinstance(body, str) else body
    try:
        parsed = parse(data)
    except FetchError:
        return
    table = mapping.detect(parsed.names) or mapping.BY_NAME["vllm"]
    mapping.figures(table, parsed.samples, mapping.ModelCap(2))


def test_only_the_re_exported_lines_are_parsed() -> None:
    """A malformed histogram nobody re-exports loses nothing; the names still count."""
    body = (FIXTURES / "vllm-0.11.prom").read_bytes() + (
        b'vllm:some_histogram_bucket{le="oops"} 1 2 3 junk\n'
    )
    parsed = parse(body)
    assert "vllm:some_histogram_bucket" in parsed.names
    assert set(parsed.samples) <= mapping.WANTED
    table = mapping.detect(parsed.names)
    assert table is not None
    assert len(mapping.figures(table, parsed.samples, mapping.ModelCap(64))) == 6


def test_a_shared_cap_draws_engine_models_from_the_proxys_names() -> None:
    from prometheus_client import CollectorRegistry

    from infermeter.proxy.recorder import Recorder
    from infermeter.streams.timing import SLO

    recorder = Recorder(CollectorRegistry(), 2, SLO(None, None, None))
    recorder.admit("seen-by-proxy")  # the upstream answered it with a 2xx
    assert recorder.model_label("seen-by-proxy") == "seen-by-proxy"
    cap = mapping.ModelCap(99, recorder.engine_model_label)
    assert cap("seen-by-proxy") == "seen-by-proxy"
    assert cap("engine-only") == "engine-only"  # the second and last name
    assert cap("third") == "_other"
    assert recorder.model_label("late-request") == "_other"  # one cap for both
    assert cap("") == ""  # an engine that names no model is not "unknown"
