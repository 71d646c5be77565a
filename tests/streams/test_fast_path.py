"""The fast paths for the bulk of a stream measure exactly what the full parse does.

Two of them: the OpenAI interpreter's JSON-free read of a plain text delta
(`OpenAIInterpreter.fast_path`), and the counted path on top of it (`feed_outputs` with
`RequestMeter.outputs`), which reads a chunk of such events in one call and hands the meter
their number. Every response below is measured three ways (counted, `feed` with the
interpreter's fast path, `feed` without it), chunked in many ways, and compared.
"""

from __future__ import annotations

import gzip
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from infermeter.proxy.recorder import Recorder
from infermeter.streams.api import Api
from infermeter.streams.formats.openai import OpenAIInterpreter
from infermeter.streams.framing import ContentDecoder, SSEDecoder
from infermeter.streams.observation import OUTPUT, TERMINAL, Observation
from infermeter.streams.parsers import SSEParser, interpreter_for
from infermeter.streams.timing import SLO, Outcome, RequestMeter, RequestRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "streams"
CASES = sorted([*FIXTURES.glob("chat_completions/*.sse"), *FIXTURES.glob("completions/*.sse")])
ALL_SSE = sorted(FIXTURES.glob("*/*.sse"))


class NoFastPath(OpenAIInterpreter):
    __slots__ = ()
    fast_path = False


def _event(payload: str) -> bytes:
    return b"data: " + payload.encode() + b"\n\n"


def _chunk(delta: str, finish: str = "null") -> bytes:
    return _event(
        '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
        f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}'
    )


ROLE = _chunk('{"role":"assistant","content":""}')


def _text(text: str) -> bytes:
    return _chunk('{"content":"' + text + '"}')


TOKENS = [_text(word) for word in ("The", " sky", " is", " blue")]
REASONING = _chunk('{"reasoning_content":"hm"}')
FINISH = _chunk("{}", '"stop"')
DONE = _event("[DONE]")
VLLM = ROLE + REASONING + b"".join(TOKENS) + FINISH + DONE


def _synthetic() -> dict[str, bytes]:
    """Streams that exercise the SSE decoder's states around the bulk chunks."""
    return {
        "vllm": VLLM,
        "bom": b"\xef\xbb\xbf" + VLLM,
        "crlf": VLLM.replace(b"\n", b"\r\n"),
        "cr": VLLM.replace(b"\n", b"\r"),
        "mixed_line_ends": (
            ROLE + TOKENS[0][:-2] + b"\r\r" + TOKENS[1] + TOKENS[2][:-2] + b"\r\n\n"
            + TOKENS[3][:-1] + b"\r\n" + FINISH + DONE
        ),
        "comments_and_fields": (
            ROLE + b": keep-alive\n\n" + TOKENS[0] + b"event: message\n" + TOKENS[1]
            + b"id: 7\n" + TOKENS[2] + b"retry: 5\n\n" + TOKENS[3] + FINISH + DONE
        ),
        "no_space_and_multiline": (
            ROLE + TOKENS[0].replace(b"data: ", b"data:") + TOKENS[1]
            + TOKENS[2].replace(b'"choices"', b'\ndata: "choices"') + TOKENS[3] + DONE
        ),
        "data_then_blank_line_later": ROLE + TOKENS[0][:-1] + TOKENS[1] + b"\n" + DONE,
        "usage_mid_stream": (
            ROLE + TOKENS[0] + _event('{"choices":[],"usage":{"completion_tokens":5}}')
            + TOKENS[1] + TOKENS[2] + DONE
        ),
        "model_in_a_token": b": hi\n\n" + TOKENS[0] + TOKENS[1] + ROLE + TOKENS[2] + DONE,
        "unterminated": ROLE + TOKENS[0] + TOKENS[1][:-2],
    }  # fmt: skip


SYNTHETIC = _synthetic()


def _events(body: bytes) -> list[bytes]:
    """The body cut after every blank line (the way vLLM writes it: one event per chunk)."""
    return [piece for piece in re.split(rb"(?<=\n\n)|(?<=\r\r)|(?<=\r\n\r\n)", body) if piece]


def _sized(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def _grouped(events: list[bytes], n: int) -> list[bytes]:
    return [b"".join(events[i : i + n]) for i in range(0, len(events), n)]


def chunkings(body: bytes) -> dict[str, list[bytes]]:
    """Ways a body arrives: every event or line on its own, events grouped, the whole body
    at once, fixed sizes (cuts inside lines, between CR and LF, inside the BOM)."""
    events = _events(body)
    out = {
        "lines": body.splitlines(keepends=True),
        "events": events,
        "pairs": _grouped(events, 2),
        "pairs_shifted": events[:1] + _grouped(events[1:], 2),
        "threes": _grouped(events, 3),
        "whole": [body],
    }
    for size in (1, 2, 3, 5, 8, 13, 64):
        out[f"size{size}"] = _sized(body, size)
    return out


def opened(
    api: Api = Api.CHAT_COMPLETIONS,
    interp: Any = None,
    encoding: str | None = None,
    cap: int | None = None,
) -> SSEParser:
    parser = SSEParser(
        interp if interp is not None else interpreter_for(api), ContentDecoder(encoding)
    )
    if cap is not None:
        parser._sse = SSEDecoder(cap)
    return parser


def per_chunk(parser: SSEParser, chunks: Sequence[bytes], *, counted: bool) -> list[Any]:
    """What each chunk (and the close) gave, a counted chunk as its OUTPUT observations."""
    out: list[Any] = []
    for chunk in chunks:
        if counted:
            n, observations = parser.feed_outputs(chunk)
            assert n >= 0
            assert not (n and observations)
            out.append([OUTPUT] * n if n else list(observations))
        else:
            out.append(parser.feed(chunk))
    out.append(parser.close())
    return out


@dataclass
class Measured:
    observations: list[Any]
    counted_chunks: int
    record: RequestRecord  # the meter without a gap sink: its record holds the gaps
    streamed: RequestRecord  # the meter feeding the ITL histogram as it goes
    itl: tuple[list[int], float, list[Any]]  # counts, sum, exemplars without their time


def measure(parser: SSEParser, chunks: Sequence[bytes], *, counted: bool) -> Measured:
    """What the proxy's `_Measure` does with each chunk, into two meters and a histogram."""
    series = Recorder.private(4, SLO(None, None, None)).series("m", Api.CHAT_COMPLETIONS)
    exemplar = {"trace_id": "0af7651916cd43dd8448eb211c80319c"}
    meters = [
        RequestMeter(0.0, True, expects_terminal=parser.expects_terminal),
        RequestMeter(
            0.0,
            True,
            expects_terminal=parser.expects_terminal,
            on_gap=lambda gap, k: series.gap(gap, k, exemplar),
        ),
    ]
    seen: list[Any] = []
    taken = 0
    for i, chunk in enumerate(chunks):
        now = 1.0 + 0.25 * (i * 7 % 5)  # not monotonic: negative gaps are clamped at 0
        if counted:
            n, observations = parser.feed_outputs(chunk)
            taken += n > 0
            for meter in meters:
                if n:
                    meter.outputs(n, now)
                for observation in observations:
                    meter.observe(observation, now)
            seen.append([OUTPUT] * n + list(observations))
        else:
            observations = parser.feed(chunk)
            for meter in meters:
                for observation in observations:
                    meter.observe(observation, now)
            seen.append(observations)
    closing = parser.close()
    for meter in meters:
        for observation in closing:
            meter.observe(observation, 50.0)
    seen.append(closing)
    record, streamed = (m.finish(99.0, status=200, outcome=Outcome.COMPLETED) for m in meters)
    itl = series.child("itl")
    exemplars = [None if e is None else e[:2] for e in itl.exemplars or []]
    return Measured(seen, taken, record, streamed, (list(itl.counts), itl.sum, exemplars))


def _sans_model(per_chunk: list[list[Observation]]) -> list[list[Observation]]:
    return [[replace(o, response_model=None) for o in chunk] for chunk in per_chunk]


def compare(
    make: Callable[[], SSEParser], slow: Callable[[], SSEParser], chunks: list[bytes]
) -> int:
    """Counted against `feed` (same parser kind: everything equal, observations too) and
    against `slow` (the interpreter's fast path off: the same record and histogram).
    Returns how many chunks took the counted path."""
    counted = measure(make(), chunks, counted=True)
    fed = measure(make(), chunks, counted=False)
    reference = measure(slow(), chunks, counted=False)
    assert counted.observations == fed.observations
    assert (counted.record, counted.streamed, counted.itl) == (fed.record, fed.streamed, fed.itl)
    assert (counted.record, counted.streamed, counted.itl) == (
        reference.record,
        reference.streamed,
        reference.itl,
    )
    # the fast paths skip only the model in events after the one that told it
    assert _sans_model(counted.observations) == _sans_model(reference.observations)
    off = measure(slow(), chunks, counted=True)  # the switch turns the counted path off too
    assert off.counted_chunks == 0
    assert off.observations == reference.observations
    return counted.counted_chunks


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_fast_path_changes_nothing(path: Path) -> None:
    body = path.read_bytes()
    api = Api(path.parent.name)
    for name, chunks in chunkings(body).items():
        taken = compare(lambda: opened(api), lambda: opened(api, NoFastPath()), chunks)
        if name == "lines":
            assert taken == 0  # a line alone is never a whole event


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_fast_path_changes_nothing_around_decoder_states(name: str) -> None:
    for chunks in chunkings(SYNTHETIC[name]).values():
        compare(opened, lambda: opened(interp=NoFastPath()), chunks)


@pytest.mark.parametrize("path", [*CASES, *SYNTHETIC], ids=lambda p: getattr(p, "stem", p))
def test_counted_path_changes_nothing_wherever_one_event_is_cut(path: Path | str) -> None:
    """One event cut in two (at every byte of its first and last 8, every 7th between:
    the middle of a JSON line is all alike), the events after it on their own chunks and
    the events before it in one."""
    body = SYNTHETIC[path] if isinstance(path, str) else path.read_bytes()
    events = _events(body)
    for k, event in enumerate(events):
        before = [b"".join(events[:k])] if k else []
        after = [*events[k + 1 : k + 3], b"".join(events[k + 3 :])]
        end = len(event)
        for cut in sorted(
            {*range(1, min(9, end)), *range(max(1, end - 8), end), *range(9, end, 7)}
        ):
            chunks = [*before, event[:cut], event[cut:], *after]
            assert per_chunk(opened(), chunks, counted=True) == per_chunk(
                opened(), chunks, counted=False
            )


@pytest.mark.parametrize("path", ALL_SSE, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_other_formats_and_encodings_never_take_the_counted_path(path: Path) -> None:
    body = path.read_bytes()
    api = Api(path.parent.name)
    wire = gzip.compress(body, mtime=0)
    for chunks in (_events(body), [body]):
        counted = per_chunk(opened(api), chunks, counted=True)
        assert counted == per_chunk(opened(api), chunks, counted=False)
        if api not in (Api.CHAT_COMPLETIONS, Api.COMPLETIONS, Api.OTHER):
            assert opened(api)._plain is None
    for size in (7, 64, len(wire)):
        chunks = _sized(wire, size)
        parser = opened(api, encoding="gzip")
        assert parser._plain is None  # compressed bytes are no events: the full path
        assert per_chunk(parser, chunks, counted=True) == per_chunk(
            opened(api, encoding="gzip"), chunks, counted=False
        )


def test_the_counted_path_is_taken_for_vllm_style_chunks() -> None:
    parser = opened()
    assert parser.feed_outputs(b": hi\n\n") == (0, [])  # the first bytes: BOM or not
    n, first = parser.feed_outputs(TOKENS[0])
    assert n == 0  # the response model is not known yet: parsed in full
    assert [o.response_model for o in first] == ["m"]
    assert parser.feed_outputs(TOKENS[0]) == (1, ())
    assert parser.feed_outputs(REASONING) == (1, ())
    assert parser.feed_outputs(TOKENS[1] + TOKENS[2] + TOKENS[3]) == (3, ())
    n, last = parser.feed_outputs(TOKENS[0] + FINISH + DONE)  # one event is not plain
    assert n == 0
    assert [o.output for o in last] == [True, False, False]
    assert last[-1] is TERMINAL
    assert last[1].finish_reason == "stop"

    # per-event chunks of a recorded vLLM stream: all but the first and the last two
    path = FIXTURES / "chat_completions" / "vllm_reasoning.sse"
    events = _events(path.read_bytes())
    assert compare(opened, lambda: opened(interp=NoFastPath()), events) == len(events) - 3


def test_the_counted_path_waits_for_an_event_boundary() -> None:
    """Any state left by an earlier chunk, or a CR in the chunk, sends it the full way."""
    cases = [
        (b"event: message\n", TOKENS[0]),  # an event begun
        (b"data: {\n", TOKENS[0]),  # data begun
        (b"data: {", TOKENS[0]),  # a line begun
        (b": ping\r", TOKENS[0]),  # a CR whose LF may come next
        (b"data: " + b"x" * 300 + b"\n", TOKENS[0]),  # an event dropped, not yet ended
        (b"", TOKENS[0][:-2] + b"\r\r" + TOKENS[1]),  # CR ends lines too: two events
        (b"", TOKENS[0][:-2] + b"\r\n\n"),  # CRLF, then LF
    ]
    for before, chunk in cases:
        parser, reference = opened(cap=200), opened(cap=200)
        for p in (parser, reference):
            p.feed(ROLE)
            p.feed(before)
        n, observations = parser.feed_outputs(chunk)
        assert n == 0, (before, chunk)
        assert observations == reference.feed(chunk)
    parser = opened()
    parser.feed(ROLE)
    parser.close()
    assert parser.feed_outputs(TOKENS[0]) == (0, [])  # closed: nothing more is observed


def test_the_counted_path_keeps_the_event_size_cap() -> None:
    long = _text("x" * 40)
    line = len(long) - 2  # `data: ...` without its blank line
    assert line > len(ROLE)
    fits, too_big = opened(cap=line), opened(cap=line - 1)
    for parser in (fits, too_big):
        parser.feed(ROLE)
    assert fits.feed_outputs(long) == (1, ())
    assert too_big.feed_outputs(long) == (0, [])  # dropped whole, as `feed` does
    assert too_big.feed_outputs(TOKENS[0] + long) == (0, [OUTPUT])
    for chunks in chunkings(VLLM + long + DONE).values():
        for cap in (line - 1, line, line + 1, line + 40):
            assert per_chunk(opened(cap=cap), chunks, counted=True) == per_chunk(
                opened(cap=cap), chunks, counted=False
            )


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize("sink", [True, False])
def test_meter_outputs_is_observe_output_n_times(streaming: bool, sink: bool) -> None:
    steps: list[tuple[int | Observation, float]] = [
        (2, 1.0),  # the first output, then a 0 gap
        (Observation(tokens=3), 1.5),  # tokens pending for the next gap
        (1, 2.0),
        (3, 1.75),  # earlier than the last output: a gap of 0
        (Observation(output=True, tokens=2), 3.0),
        (0, 4.0),
        (1, 4.5),
    ]
    gaps: list[list[tuple[float, int]]] = [[], []]
    records = []
    for counted in (True, False):
        got = gaps[counted]
        meter = RequestMeter(
            0.0, streaming, on_gap=(lambda g, k, got=got: got.append((g, k))) if sink else None
        )
        for step, now in steps:
            if isinstance(step, Observation):
                meter.observe(step, now)
            elif counted:
                meter.outputs(step, now)
            else:
                for _ in range(step):
                    meter.observe(OUTPUT, now)
        records.append(meter.finish(9.0, status=200, outcome=Outcome.COMPLETED))
    assert records[0] == records[1]
    assert gaps[0] == gaps[1]
    if streaming:
        assert [*records[0].itl, *gaps[0]] == [
            (0.0, 1),
            (1.0, 3),
            (0.0, 1),
            (0.0, 1),
            (0.0, 1),
            (1.25, 2),
            (1.5, 1),
        ]


SAMPLES = [ROLE, *TOKENS, REASONING, FINISH, DONE, b"\r", b"\n", b"\r\n", b": ping\n\n",
           b"event: x\n", b"data: ", b"data:", b"\xef\xbb\xbf", b"{", b"\n\n"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.sampled_from(SAMPLES), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=10),
)
def test_counted_path_is_feed_for_any_stream_and_cuts(parts: list[bytes], cuts: list[int]) -> None:
    body = b"".join(parts)
    bounds = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
    assert per_chunk(opened(), chunks, counted=True) == per_chunk(opened(), chunks, counted=False)
    counted = measure(opened(), chunks, counted=True)
    fed = measure(opened(), chunks, counted=False)
    assert (counted.record, counted.streamed, counted.itl) == (fed.record, fed.streamed, fed.itl)
