"""Parser selection, bounds, and the promise never to raise."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from infermeter.streams import parsers
from infermeter.streams.api import Api
from infermeter.streams.observation import NOTHING, OUTPUT, TERMINAL, Observation
from infermeter.streams.parsers import (
    GenericParser,
    JSONBodyParser,
    NDJSONParser,
    SSEParser,
    StreamParser,
    parser_for,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"


@pytest.mark.parametrize(
    ("api", "streaming", "content_type", "kind", "expects_terminal"),
    [
        (Api.CHAT_COMPLETIONS, True, "text/event-stream; charset=utf-8", SSEParser, True),
        (Api.CHAT_COMPLETIONS, False, "Text/Event-Stream", SSEParser, True),
        (Api.OTHER, True, "text/event-stream", SSEParser, False),
        (Api.CHAT_COMPLETIONS, False, "application/json", JSONBodyParser, False),
        (Api.ANTHROPIC_MESSAGES, False, "application/problem+json", JSONBodyParser, False),
        (Api.OLLAMA_CHAT, True, "application/x-ndjson", NDJSONParser, True),
        (Api.OLLAMA_CHAT, True, "application/json; charset=utf-8", NDJSONParser, True),
        (Api.OLLAMA_GENERATE, True, None, NDJSONParser, True),
        (Api.OLLAMA_GENERATE, False, "application/json", JSONBodyParser, False),
        (Api.OTHER, True, "application/x-ndjson", NDJSONParser, False),
        (Api.CHAT_COMPLETIONS, True, None, GenericParser, False),
        (Api.CHAT_COMPLETIONS, True, "text/html", GenericParser, False),
        (Api.TGI_GENERATE, True, "text/plain", GenericParser, False),
    ],
)
def test_parser_for(
    api: Api, streaming: bool, content_type: str | None, kind: type, expects_terminal: bool
) -> None:
    p = parser_for(api, streaming=streaming, content_type=content_type, content_encoding=None)
    assert type(p) is kind
    assert p.expects_terminal is expects_terminal


def feed_all(p: StreamParser, *chunks: bytes) -> list[Observation]:
    out: list[Observation] = []
    for c in chunks:
        out += p.feed(c)
    return out + p.close()


def sse_parser(api: Api) -> StreamParser:
    return parser_for(api, streaming=True, content_type="text/event-stream", content_encoding=None)


def test_close_twice_and_feed_after_close() -> None:
    p = sse_parser(Api.CHAT_COMPLETIONS)
    assert feed_all(p, b"data: [DONE]") == [TERMINAL]
    assert p.close() == []
    assert p.feed(b"data: [DONE]\n\n") == []
    j = parser_for(
        Api.OTHER, streaming=False, content_type="application/json", content_encoding=None
    )
    assert feed_all(j, b"{}") == [Observation(terminal=True)]
    assert j.close() == []
    assert j.feed(b"{}") == []


def test_json_body_over_cap_reports_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parsers, "MAX_JSON_BODY_BYTES", 100)
    body = json.dumps({"usage": {"prompt_tokens": 1, "completion_tokens": 2}, "pad": "x" * 200})
    p = parser_for(
        Api.CHAT_COMPLETIONS,
        streaming=False,
        content_type="application/json",
        content_encoding=None,
    )
    assert feed_all(p, body.encode()) == []


def test_json_body_gzip_and_corrupt() -> None:
    doc = {"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "choices": []}
    wire = gzip.compress(json.dumps(doc).encode())
    good = parser_for(
        Api.CHAT_COMPLETIONS,
        streaming=False,
        content_type="application/json",
        content_encoding="gzip",
    )
    assert feed_all(good, wire[:5], wire[5:]) == [
        Observation(prompt_tokens=3, completion_tokens=4, terminal=True, response_model="m")
    ]
    bad = parser_for(
        Api.CHAT_COMPLETIONS,
        streaming=False,
        content_type="application/json",
        content_encoding="gzip",
    )
    assert feed_all(bad, wire[:-12]) == []  # cut body: no usage rather than a guess


def test_openai_tool_call_name_alone_is_not_output() -> None:
    p = sse_parser(Api.CHAT_COMPLETIONS)
    name = {"choices": [{"index": 0, "delta": {"tool_calls": [{"function": {"name": "f"}}]}}]}
    args = {"choices": [{"index": 0, "delta": {"function_call": {"arguments": "{"}}}]}
    refusal = {"choices": [{"index": 0, "delta": {"refusal": "no"}}]}
    body = b"".join(b"data: " + json.dumps(d).encode() + b"\n\n" for d in (name, args, refusal))
    assert [o.output for o in feed_all(p, body)] == [False, True, True]


def test_openai_non_dict_and_strange_shapes() -> None:
    p = sse_parser(Api.CHAT_COMPLETIONS)
    events = [
        b"[1]",
        b'"str"',
        b"{not json",
        b'{"choices": "x", "usage": [1]}',
        b'{"choices": [1, null, {"delta": "x", "text": 5}]}',
        b'{"choices": [{"delta": {"tool_calls": [1, {"function": 2}]}}]}',
        b'{"usage": {"prompt_tokens": true, "completion_tokens": -3}}',
        b'{"usage": {"prompt_tokens": 4.0, "completion_tokens": 1e400}}',
        b"  [DONE]  ",
    ]
    obs = feed_all(p, b"".join(b"data: " + e + b"\n\n" for e in events))
    assert not any(o.output or o.error for o in obs)
    assert [o.prompt_tokens for o in obs if o.prompt_tokens is not None] == [4]
    assert obs[-1] == TERMINAL


def test_openai_usage_delta_never_negative() -> None:
    p = sse_parser(Api.CHAT_COMPLETIONS)
    body = b"".join(b'data: {"usage": {"completion_tokens": %d}}\n\n' % n for n in (3, 5, 2, 4))
    assert [o.tokens for o in feed_all(p, body)] == [3, 2, None, 2]


def test_anthropic_start_output_tokens_is_not_a_count() -> None:
    p = sse_parser(Api.ANTHROPIC_MESSAGES)
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}
    obs = feed_all(p, b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    assert obs == [Observation(prompt_tokens=5)]


def test_events_without_event_names_use_the_json_type() -> None:
    r = sse_parser(Api.RESPONSES)
    body = b'data: {"type":"response.output_text.delta","delta":"x"}\n\ndata: {"type":"error"}\n\n'
    assert feed_all(r, body) == [OUTPUT, Observation(error=True)]
    a = sse_parser(Api.ANTHROPIC_MESSAGES)
    body = b'data: {"type":"message_stop"}\n\ndata: {"type":"ping"}\n\n'
    assert feed_all(a, body) == [TERMINAL, NOTHING]


def test_tgi_special_token_counts_but_is_not_output() -> None:
    p = sse_parser(Api.TGI_GENERATE)
    tok = {"token": {"id": 2, "text": "</s>", "special": True}, "generated_text": None}
    assert feed_all(p, b"data:" + json.dumps(tok).encode() + b"\n\n") == [Observation(tokens=1)]


def test_tgi_list_body() -> None:
    p = parser_for(
        Api.TGI_GENERATE, streaming=False, content_type="application/json", content_encoding=None
    )
    obs = feed_all(p, b'[{"generated_text": "hi"}]')
    assert obs == [Observation(output=True, terminal=True)]


def test_generic_parser_observes_nothing() -> None:
    p = GenericParser()
    assert feed_all(p, b"data: [DONE]\n\n") == []


# --- never raise -------------------------------------------------------------------------

ALL_PARSERS = [
    (api, ct, enc)
    for api in Api
    for ct in ("text/event-stream", "application/x-ndjson", "application/json")
    for enc in (None, "gzip")
]


def _mutations(body: bytes, rng: random.Random) -> list[bytes]:
    out = [body[: rng.randrange(len(body) + 1)] for _ in range(3)]
    for _ in range(12):
        b = bytearray(body)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b)) if b else 0
            op = rng.randrange(4)
            if op == 0 and b:
                b[i] = rng.randrange(256)
            elif op == 1:
                b[i:i] = rng.choice([b"\r", b"\n", b":", b"\xff", b'"', b"{", b"\x00", b"data:"])
            elif op == 2:
                del b[i : i + rng.randint(1, 20)]
            else:
                b[i:i] = b[rng.randrange(len(b) + 1) :][:30]
        out.append(bytes(b))
    out.append(bytes(rng.randrange(256) for _ in range(300)))
    return out


def test_fuzzed_fixtures_never_raise() -> None:
    rng = random.Random(20241122)
    bodies = [p.read_bytes() for p in sorted(FIXTURES.glob("*/*")) if ".expect." not in p.name]
    for body in bodies:
        for mutated in _mutations(body, rng):
            for api, ct, enc in ALL_PARSERS:
                wire = gzip.compress(mutated) if enc and rng.random() < 0.5 else mutated
                p = parser_for(api, streaming=True, content_type=ct, content_encoding=enc)
                cut = rng.randrange(len(wire) + 1)
                for obs in feed_all(p, wire[:cut], wire[cut:]):
                    assert isinstance(obs, Observation)
