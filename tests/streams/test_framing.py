"""SSE, NDJSON and Content-Encoding edge cases."""

from __future__ import annotations

import gzip
import zlib

import pytest

from infermeter.streams.framing import (
    ContentDecoder,
    NDJSONDecoder,
    SSEComment,
    SSEDecoder,
    SSEEvent,
)


def sse(*chunks: bytes, max_event_bytes: int | None = None) -> list[SSEEvent | SSEComment]:
    dec = SSEDecoder() if max_event_bytes is None else SSEDecoder(max_event_bytes)
    out: list[SSEEvent | SSEComment] = []
    for c in chunks:
        out += dec.feed(c)
    return out + dec.close()


def ev(data: bytes, event: str = "message") -> SSEEvent:
    return SSEEvent(event, data)


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_sse_line_ends(eol: bytes) -> None:
    body = b"data: a" + eol + eol + b"event: x" + eol + b"data: b" + eol + eol
    assert sse(body) == [ev(b"a"), ev(b"b", "x")]


def test_sse_mixed_line_ends_and_cr_lf_split_across_feeds() -> None:
    assert sse(b"data: a\r", b"\n\r", b"\ndata: b\n\r\n") == [ev(b"a"), ev(b"b")]
    # a CR at the end of a feed followed by a non-LF is a complete line end on its own
    assert sse(b"data: a\r", b"\rdata: b\r\r") == [ev(b"a"), ev(b"b")]


def test_sse_many_events_in_one_feed_and_one_event_over_many() -> None:
    assert sse(b"data: 1\n\ndata: 2\n\ndata: 3\n\n") == [ev(b"1"), ev(b"2"), ev(b"3")]
    assert sse(b"da", b"ta", b": he", b"llo\n", b"\n") == [ev(b"hello")]


def test_sse_multiline_data_joined_with_lf() -> None:
    assert sse(b'data: {"a":\ndata:  1}\n\n') == [ev(b'{"a":\n 1}')]


def test_sse_field_parsing_rules() -> None:
    # no space after the colon; only one leading space removed; field without colon
    assert sse(b"data:x\n\n") == [ev(b"x")]
    assert sse(b"data:  x\n\n") == [ev(b" x")]
    assert sse(b"data\n\n") == [ev(b"")]
    # unknown fields, id and retry are ignored; the event type resets after dispatch
    assert sse(b"id: 7\nretry: 10\nfoo: bar\nevent: e\ndata: 1\n\ndata: 2\n\n") == [
        ev(b"1", "e"),
        ev(b"2"),
    ]


def test_sse_blank_line_without_data_dispatches_nothing() -> None:
    assert sse(b"\n\n\nevent: ping\n\n") == []


def test_sse_comments_are_reported() -> None:
    assert sse(b": keep-alive\n\n:\ndata: x\n\n") == [
        SSEComment(b" keep-alive"),
        SSEComment(b""),
        ev(b"x"),
    ]


@pytest.mark.parametrize("split", [0, 1, 2, 3, 4])
def test_sse_leading_bom_is_dropped_even_when_split(split: int) -> None:
    body = b"\xef\xbb\xbfdata: x\n\n"
    assert sse(body[:split], body[split:]) == [ev(b"x")]
    assert sse(*(body[i : i + 1] for i in range(len(body)))) == [ev(b"x")]


def test_sse_only_the_first_bom_is_special() -> None:
    assert sse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [ev(b"a")]  # field "\ufeffdata"


def test_sse_bom_prefix_alone_is_data() -> None:
    assert sse(b"\xef") == []
    assert sse(b"\xef\xbb") == []


def test_sse_close_delivers_event_without_final_blank_line() -> None:
    assert sse(b"data: [DONE]") == [ev(b"[DONE]")]
    assert sse(b"data: [DONE]\n") == [ev(b"[DONE]")]
    assert sse(b"data: [DONE]\r") == [ev(b"[DONE]")]


def test_sse_invalid_utf8_passes_through_as_bytes() -> None:
    assert sse(b"event: \xff\ndata: \xfe\xff\n\n") == [ev(b"\xfe\xff", "\ufffd")]


def test_sse_oversized_event_is_dropped_and_stream_recovers() -> None:
    big_line = b"data: " + b"x" * 100 + b"\n\ndata: ok\n\n"
    assert sse(big_line, max_event_bytes=50) == [ev(b"ok")]
    pieces = [big_line[i : i + 7] for i in range(0, len(big_line), 7)]
    assert sse(*pieces, max_event_bytes=50) == [ev(b"ok")]
    many_lines = b"data: 0123456789\n" * 10 + b"\ndata: ok\n\n"
    assert sse(many_lines, max_event_bytes=50) == [ev(b"ok")]
    assert sse(b"data: " + b"y" * 100, max_event_bytes=50) == []


def test_sse_feed_after_close_and_empty_feeds() -> None:
    dec = SSEDecoder()
    assert dec.feed(b"") == []
    assert dec.feed(b"data: a\n\n") == [ev(b"a")]
    assert dec.close() == []
    assert dec.close() == []


def ndjson(*chunks: bytes, max_line_bytes: int | None = None) -> list[bytes]:
    dec = NDJSONDecoder() if max_line_bytes is None else NDJSONDecoder(max_line_bytes)
    out: list[bytes] = []
    for c in chunks:
        out += dec.feed(c)
    return out + dec.close()


def test_ndjson_lines_crlf_blank_and_last_without_newline() -> None:
    assert ndjson(b'{"a":1}\r\n\r\n  \n{"b":', b"2}\n", b'{"c":3}') == [
        b'{"a":1}',
        b'{"b":2}',
        b'{"c":3}',
    ]
    assert ndjson(b"", b"\n", b"") == []


def test_ndjson_oversized_line_is_dropped() -> None:
    assert ndjson(b"x" * 30, b"y" * 30 + b"\n{}\n", max_line_bytes=40) == [b"{}"]
    assert ndjson(b"x" * 30, b"y" * 30, max_line_bytes=40) == []


def decode_all(dec: ContentDecoder, *chunks: bytes) -> bytes:
    return b"".join(dec.decode(c) for c in chunks) + dec.flush()


BODY = b"data: hello\n\n" * 50


@pytest.mark.parametrize("name", [None, "", "identity", "Identity, identity"])
def test_content_identity_passes_through(name: str | None) -> None:
    assert decode_all(ContentDecoder(name), BODY[:10], BODY[10:]) == BODY


@pytest.mark.parametrize("name", ["gzip", "x-gzip", "GZIP"])
def test_content_gzip_bytewise(name: str) -> None:
    wire = gzip.compress(BODY)
    dec = ContentDecoder(name)
    assert decode_all(dec, *(wire[i : i + 1] for i in range(len(wire)))) == BODY
    assert not dec.failed


def test_content_deflate_zlib_and_raw() -> None:
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for wire in (zlib.compress(BODY), raw.compress(BODY) + raw.flush()):
        assert decode_all(ContentDecoder("deflate"), wire[:1], wire[1:]) == BODY


def test_content_corrupt_stops_quietly() -> None:
    wire = bytearray(gzip.compress(BODY))
    wire[20:30] = b"\x00" * 10
    dec = ContentDecoder("gzip")
    out = decode_all(dec, bytes(wire))
    assert dec.failed
    assert BODY.startswith(out)
    assert dec.decode(b"more") == b""


def test_content_not_compressed_at_all() -> None:
    dec = ContentDecoder("gzip")
    assert decode_all(dec, BODY) == b""
    assert dec.failed


def test_content_truncated_gzip_gives_a_prefix() -> None:
    wire = gzip.compress(BODY)
    dec = ContentDecoder("gzip")
    out = decode_all(dec, wire[: len(wire) // 2])
    assert BODY.startswith(out)


def test_content_trailing_garbage_after_gzip_member() -> None:
    dec = ContentDecoder("gzip")
    assert decode_all(dec, gzip.compress(BODY) + b"garbage!") == BODY
    assert dec.failed


@pytest.mark.parametrize("name", ["br", "zstd", "gzip, br", "compress"])
def test_content_unsupported_observes_nothing(name: str) -> None:
    dec = ContentDecoder(name)
    assert dec.failed
    assert decode_all(dec, BODY) == b""


def test_content_deflate_single_byte_then_close() -> None:
    dec = ContentDecoder("deflate")
    assert dec.decode(b"\x78") == b""
    assert dec.flush() == b""
    assert decode_all(ContentDecoder("deflate")) == b""


def test_content_decompression_bomb_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("infermeter.streams.framing.MAX_INFLATE_PER_CHUNK", 1000)
    dec = ContentDecoder("gzip")
    out = dec.decode(gzip.compress(b"\x00" * 100_000))
    assert len(out) <= 1000
    assert dec.failed


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: a\n\ndata: b\n\n"],  # whole events: the fast path
        [b"event: delta\n", b"data: a\n\n"],  # a named event whose data comes later
        [b"data: a\n", b"data: b\n\n"],  # a multi-line event completed by a whole chunk
        [b"data: " + b"x" * 44 + b"\n\n", b"data: " + b"x" * 43 + b"\n\n"],  # at the cap
        [b"data: " + b"x" * 45 + b"\n\n", b"data: ok\n\n"],  # one past it
        [b"data: a\n\n\n\ndata: b\n\n"],  # blank lines between events
        [b"data:a\n\ndata: b\n\n"],  # no space after the colon
        [b"data: a\r\n\r\n", b"data: b\n\n"],
    ],
)
def test_sse_whole_event_chunks_decode_as_bytewise(chunks: list[bytes]) -> None:
    """The shortcut for chunks of whole `data:` events gives what byte-by-byte feeding gives."""
    bytewise = [bytes([b]) for b in b"".join(chunks)]
    assert sse(*chunks, max_event_bytes=50) == sse(*bytewise, max_event_bytes=50)
