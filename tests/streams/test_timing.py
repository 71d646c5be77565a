"""The per-request state machine, on injected times only."""

from __future__ import annotations

import pytest

from infermeter.streams.observation import NOTHING, OUTPUT, TERMINAL, Observation
from infermeter.streams.timing import (
    SLO,
    ErrorType,
    Outcome,
    RequestMeter,
    RequestRecord,
    is_good,
)


def run(
    events: list[tuple[float, Observation]],
    *,
    streaming: bool = True,
    expects_terminal: bool = True,
    end: float = 2.0,
    status: int = 200,
    outcome: Outcome = Outcome.COMPLETED,
) -> RequestRecord:
    meter = RequestMeter(10.0, streaming, expects_terminal=expects_terminal)
    meter.first_byte(10.1)
    meter.first_byte(10.2)  # ignored
    for t, obs in events:
        meter.observe(obs, 10.0 + t)
    return meter.finish(10.0 + end, status=status, outcome=outcome)


def test_ttft_skips_non_output_events_and_itl_is_per_event() -> None:
    r = run([(0.2, NOTHING), (0.5, OUTPUT), (0.6, OUTPUT), (0.9, OUTPUT), (1.0, TERMINAL)])
    assert r.ttfb == pytest.approx(0.1)
    assert r.ttft == pytest.approx(0.5)
    assert [k for _, k in r.itl] == [1, 1]
    assert [g for g, _ in r.itl] == pytest.approx([0.1, 0.3])
    assert r.e2e == pytest.approx(2.0)
    assert r.completion_tokens is None
    assert r.completion_tokens_estimated == 3
    # no usage: TPOT from the estimate, (0.9 - 0.5) / (3 - 1)
    assert r.tpot == pytest.approx(0.2)
    assert r.error_type is None


def test_itl_k_from_token_counts_including_non_output_events() -> None:
    tok = Observation(output=True, tokens=1)
    r = run(
        [
            (0.5, tok),
            (0.6, Observation(output=True, tokens=3)),  # gap 0.1 over 3 tokens
            (0.7, Observation(tokens=1)),  # e.g. TGI special / partial token, no output
            (0.9, tok),  # gap 0.3 over 2 tokens
            (1.0, Observation(output=True, tokens=0)),  # count 0 -> one observation
            (1.1, Observation(output=True)),  # unknown -> one observation
            (1.2, TERMINAL),
        ]
    )
    assert [k for _, k in r.itl] == [3, 2, 1, 1]
    assert [g for g, _ in r.itl] == pytest.approx([0.1, 0.3, 0.1, 0.1])


def test_tpot_prefers_usage_over_estimate() -> None:
    r = run(
        [
            (0.5, OUTPUT),
            (1.5, OUTPUT),
            (1.6, Observation(completion_tokens=11, prompt_tokens=7)),
            (1.7, TERMINAL),
        ]
    )
    assert r.completion_tokens == 11
    assert r.completion_tokens_estimated is None
    assert r.prompt_tokens == 7
    assert r.tpot == pytest.approx(1.0 / 10)


def test_cumulative_usage_latest_wins() -> None:
    r = run(
        [
            (0.1, Observation(prompt_tokens=5)),
            (0.5, OUTPUT),
            (0.6, Observation(completion_tokens=10)),
            (0.7, Observation(completion_tokens=25)),
            (0.8, TERMINAL),
        ]
    )
    assert r.completion_tokens == 25
    assert r.prompt_tokens == 5


@pytest.mark.parametrize(
    ("events", "tpot"),
    [
        ([(0.5, OUTPUT)], None),  # one output token
        ([(0.5, OUTPUT), (0.6, Observation(completion_tokens=1))], None),  # usage says 1
        ([(0.5, OUTPUT), (0.6, Observation(completion_tokens=5))], None),  # one event
        ([(0.5, OUTPUT), (0.7, OUTPUT)], 0.2),
    ],
)
def test_tpot_needs_two_tokens_and_two_events(
    events: list[tuple[float, Observation]], tpot: float | None
) -> None:
    r = run([*events, (1.0, TERMINAL)])
    assert r.tpot == (None if tpot is None else pytest.approx(tpot))


def test_non_streaming_has_no_ttft_itl_tpot_or_estimate() -> None:
    r = run(
        [(1.0, Observation(output=True, terminal=True)), (1.0, OUTPUT)],
        streaming=False,
        expects_terminal=False,
    )
    assert (r.ttft, r.itl, r.tpot, r.completion_tokens_estimated) == (None, (), None, None)
    assert r.e2e == pytest.approx(2.0)
    assert r.error_type is None
    assert not r.streaming


def test_no_first_byte() -> None:
    meter = RequestMeter(1.0, True)
    r = meter.finish(1.5, status=502, outcome=Outcome.UPSTREAM_CONNECT)
    assert r.ttfb is None
    assert r.completion_tokens_estimated is None
    assert r.error_type is ErrorType.UPSTREAM_CONNECT


def test_finish_is_idempotent() -> None:
    meter = RequestMeter(0.0, True)
    meter.observe(OUTPUT, 0.1)
    first = meter.finish(1.0, status=200, outcome=Outcome.COMPLETED)
    assert meter.finish(5.0, status=500, outcome=Outcome.PROXY_INTERNAL) is first


def test_finish_reasons_per_choice_latest_wins_sorted_by_choice() -> None:
    r = run(
        [
            (0.5, Observation(finish_reason="length", choice=1)),
            (0.6, Observation(finish_reason="stop", choice=0)),
            (0.7, Observation(finish_reason="tool_use", choice=0)),
            (0.8, Observation(response_model="m-1")),
            (0.9, TERMINAL),
        ]
    )
    assert r.finish_reasons == ("tool_use", "length")
    assert r.response_model == "m-1"


def test_finish_reasons_bounded() -> None:
    r = run([(0.1, Observation(finish_reason="stop", choice=i)) for i in range(100)])
    assert len(r.finish_reasons) == 16


def test_clock_going_backwards_never_gives_negative_gaps() -> None:
    r = run([(0.5, OUTPUT), (0.4, OUTPUT), (0.6, TERMINAL)])
    assert r.itl == ((0.0, 1),)


ERROR_CASES = [
    # (status, outcome, stream error event, terminal seen, expected)
    (200, Outcome.COMPLETED, False, True, None),
    (200, Outcome.UPSTREAM_CONNECT, False, False, ErrorType.UPSTREAM_CONNECT),
    (504, Outcome.UPSTREAM_TIMEOUT, False, False, ErrorType.UPSTREAM_TIMEOUT),
    (200, Outcome.UPSTREAM_TIMEOUT, True, False, ErrorType.UPSTREAM_TIMEOUT),
    (404, Outcome.COMPLETED, False, False, ErrorType.UPSTREAM_HTTP_4XX),
    (429, Outcome.COMPLETED, True, True, ErrorType.UPSTREAM_HTTP_4XX),
    (503, Outcome.COMPLETED, False, False, ErrorType.UPSTREAM_HTTP_5XX),
    (200, Outcome.COMPLETED, True, True, ErrorType.STREAM_ERROR),
    (200, Outcome.UPSTREAM_RESET, True, False, ErrorType.STREAM_ERROR),
    (200, Outcome.UPSTREAM_RESET, False, False, ErrorType.STREAM_TRUNCATED),
    (200, Outcome.UPSTREAM_RESET, False, True, ErrorType.STREAM_TRUNCATED),
    (200, Outcome.COMPLETED, False, False, ErrorType.STREAM_TRUNCATED),
    (200, Outcome.CLIENT_DISCONNECT, False, False, ErrorType.CLIENT_DISCONNECT),
    (500, Outcome.CLIENT_DISCONNECT, False, False, ErrorType.CLIENT_DISCONNECT),
    (200, Outcome.PROXY_INTERNAL, False, True, ErrorType.PROXY_INTERNAL),
    (302, Outcome.COMPLETED, False, True, None),
]


@pytest.mark.parametrize(("status", "outcome", "error", "terminal", "expected"), ERROR_CASES)
def test_error_type(
    status: int, outcome: Outcome, error: bool, terminal: bool, expected: ErrorType | None
) -> None:
    events = [(0.5, OUTPUT)]
    if error:
        events.append((0.6, Observation(error=True)))
    if terminal:
        events.append((0.7, TERMINAL))
    assert run(events, status=status, outcome=outcome).error_type == expected


def test_missing_terminal_only_matters_when_expected_and_streaming() -> None:
    assert run([(0.5, OUTPUT)], expects_terminal=False).error_type is None
    assert run([(0.5, OUTPUT)], streaming=False).error_type is None
    assert (
        RequestMeter(0.0, True).finish(1.0, status=200, outcome=Outcome.COMPLETED).error_type
        is None
    )


def test_error_type_values_are_the_closed_list() -> None:
    assert {e.value for e in ErrorType} == {
        "upstream_connect",
        "upstream_timeout",
        "upstream_http_4xx",
        "upstream_http_5xx",
        "stream_error",
        "stream_truncated",
        "client_disconnect",
        "proxy_internal",
    }


MLPERF = SLO(ttft=0.450, tpot=0.040, e2e=None)


def streamed(ttft: float, gap: float, n: int = 5, **kw: object) -> RequestRecord:
    events = [(ttft + i * gap, OUTPUT) for i in range(n)]
    return run([*events, (ttft + n * gap, TERMINAL)], **kw)  # type: ignore[arg-type]


def test_goodput_streaming() -> None:
    assert is_good(streamed(0.4, 0.03), MLPERF)
    # thresholds are inclusive (binary-exact times, so no rounding decides)
    assert is_good(streamed(0.5, 0.25, end=4.0), SLO(ttft=0.5, tpot=0.25, e2e=4.0))
    assert not is_good(streamed(0.5, 0.03), MLPERF)
    assert not is_good(streamed(0.4, 0.05), MLPERF)
    assert not is_good(streamed(0.4, 0.03, status=500), MLPERF)
    assert not is_good(streamed(0.4, 0.03, outcome=Outcome.UPSTREAM_RESET), MLPERF)
    e2e = SLO(ttft=None, tpot=None, e2e=1.0)
    assert not is_good(streamed(0.4, 0.03), e2e)  # e2e is 2.0
    assert is_good(streamed(0.4, 0.03, end=1.0), e2e)
    assert is_good(streamed(5.0, 5.0), SLO(ttft=None, tpot=None, e2e=None))


def test_goodput_not_measured_is_not_held_against() -> None:
    one_token = run([(0.3, OUTPUT), (0.4, TERMINAL)])
    assert one_token.tpot is None
    assert is_good(one_token, MLPERF)
    no_output = run([(0.3, TERMINAL)])
    assert no_output.ttft is None
    assert is_good(no_output, MLPERF)


def test_goodput_non_streaming_judged_on_e2e_only() -> None:
    slow = run(
        [(9.0, Observation(output=True, terminal=True))],
        streaming=False,
        expects_terminal=False,
        end=9.5,
    )
    assert is_good(slow, MLPERF)  # TTFT/TPOT are not measured for non-streaming
    assert not is_good(slow, SLO(ttft=0.45, tpot=0.04, e2e=5.0))
    assert is_good(slow, SLO(ttft=0.45, tpot=0.04, e2e=10.0))


def test_a_finish_reason_without_terminal_event_is_not_truncated() -> None:
    finished = Observation(output=True, finish_reason="stop")
    assert run([(0.5, OUTPUT), (0.6, finished)], expects_terminal=True).error_type is None
    assert run([(0.5, OUTPUT)], expects_terminal=True).error_type == ErrorType.STREAM_TRUNCATED


def test_on_gap_receives_gaps_as_they_happen() -> None:
    gaps: list[tuple[float, int]] = []
    meter = RequestMeter(0.0, True, on_gap=lambda gap, k: gaps.append((gap, k)))
    meter.observe(OUTPUT, 0.25)
    meter.observe(OUTPUT, 0.5)
    assert gaps == [(0.25, 1)]
    meter.observe(Observation(output=True, tokens=2), 1.0)
    assert gaps == [(0.25, 1), (0.5, 2)]
    assert meter.finish(1.0, status=200, outcome=Outcome.COMPLETED).itl == ()
