"""Property tests: no input makes a parser raise, and chunking never changes what it sees."""

from __future__ import annotations

import gzip
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infermeter.streams.api import Api
from infermeter.streams.parsers import parser_for
from infermeter.streams.request_info import parse_request_body
from infermeter.streams.timing import Outcome, RequestMeter

CONTENT_TYPES = [
    "text/event-stream",
    "application/x-ndjson",
    "application/json",
    "text/plain",
    None,
]
EVENTISH = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [b"data: ", b"\n\n", b"\r\n", b"\r", b": ping\n", b"event: x\n", b"[DONE]", b"{",
             b'{"choices":[{"delta":{"content":"x"}}]}', b'{"error":{}}', b'"usage":',
             b'{"done":true,"eval_count":3}\n', b"\xff\xfe", b"data: {\"type\":\"message_stop\"}"]
        ),
    ),
    max_size=40,
).map(b"".join)  # fmt: skip


def feed_all(
    api: Api, content_type: str | None, encoding: str | None, pieces: list[bytes]
) -> list[object]:
    parser = parser_for(api, streaming=True, content_type=content_type, content_encoding=encoding)
    meter = RequestMeter(0.0, True, expects_terminal=parser.expects_terminal)
    seen: list[object] = []
    for i, piece in enumerate(pieces):
        for observation in parser.feed(piece):
            meter.observe(observation, float(i))
            seen.append(observation)
    for observation in parser.close():
        meter.observe(observation, float(len(pieces)))
        seen.append(observation)
    meter.finish(float(len(pieces)) + 1, status=200, outcome=Outcome.COMPLETED)
    return seen


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    api=st.sampled_from(list(Api)),
    content_type=st.sampled_from(CONTENT_TYPES),
    encoding=st.sampled_from([None, "gzip", "deflate", "br", "x-bogus"]),
    body=EVENTISH,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_parsers_never_raise_and_chunking_does_not_matter(
    api: Api, content_type: str | None, encoding: str | None, body: bytes, cuts: list[int]
) -> None:
    data = gzip.compress(body) if encoding == "gzip" else body
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    whole = feed_all(api, content_type, encoding, [data])
    split = feed_all(api, content_type, encoding, pieces)
    if encoding in (None, "gzip"):  # valid encodings: where the cuts fall must not matter
        assert split == whole


@settings(max_examples=300)
@given(api=st.sampled_from(list(Api)), body=st.binary(max_size=512), path=st.text(max_size=30))
def test_request_bodies_never_raise(api: Api, body: bytes, path: str) -> None:
    info = parse_request_body(api, body, path=path)
    assert info.n >= 1
