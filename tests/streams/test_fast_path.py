"""The JSON-free fast path for plain text deltas measures exactly what the full parse does."""

from __future__ import annotations

from pathlib import Path

import pytest

from infermeter.streams.formats.openai import OpenAIInterpreter
from infermeter.streams.framing import ContentDecoder
from infermeter.streams.parsers import SSEParser
from infermeter.streams.timing import Outcome, RequestMeter, RequestRecord

FIXTURES = Path(__file__).parents[1] / "fixtures" / "streams"
CASES = sorted([*FIXTURES.glob("chat_completions/*.sse"), *FIXTURES.glob("completions/*.sse")])


class NoFastPath(OpenAIInterpreter):
    __slots__ = ()
    fast_path = False


def record(body: bytes, interp: OpenAIInterpreter) -> RequestRecord:
    parser = SSEParser(interp, ContentDecoder(None))
    meter = RequestMeter(0.0, True, expects_terminal=True)
    for i, line in enumerate(body.splitlines(keepends=True)):
        for observation in parser.feed(line):
            meter.observe(observation, float(i))
    for observation in parser.close():
        meter.observe(observation, 1e6)
    return meter.finish(2e6, status=200, outcome=Outcome.COMPLETED)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_fast_path_changes_nothing(path: Path) -> None:
    body = path.read_bytes()
    assert record(body, OpenAIInterpreter()) == record(body, NoFastPath())


def test_fast_path_is_taken_for_vllm_style_chunks() -> None:
    interp = OpenAIInterpreter()
    head = b'{"id":"x","model":"m","choices":[{"index":0,'
    first = head + b'"delta":{"content":"a"},"finish_reason":null}]}'
    later = head + b'"delta":{"content":"b"},"logprobs":null,"finish_reason":null}]}'
    assert interp.event("", first).response_model == "m"  # full parse: model not yet known
    assert interp.event("", later).response_model is None  # fast path: model already known
    assert interp.event("", later).output
