"""Recorded response bodies under tests/fixtures/streams/<api>/ and what they must yield.

A new case is a new pair of files: ``<case>.sse|.ndjson|.json|.txt`` (raw body bytes) and
``<case>.expect.json``. Required keys: ``first_output_index`` (index of the first
output-bearing observation, or null), ``output_events``, ``prompt_tokens``,
``completion_tokens`` (exact, or null), ``error``, ``terminal``. Optional:
``finish_reasons`` (in arrival order), ``response_model`` (the last one reported),
``tokens`` (the non-null per-event token counts), ``events`` (number of observations).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from infermeter.streams.api import Api
from infermeter.streams.observation import Observation
from infermeter.streams.parsers import parser_for
from infermeter.streams.timing import Outcome, RequestMeter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "streams"

CONTENT_TYPES = {
    ".sse": "text/event-stream; charset=utf-8",
    ".ndjson": "application/x-ndjson",
    ".json": "application/json",
    ".txt": "text/html",
}


def _cases() -> list[Any]:
    cases = []
    for expect in sorted(FIXTURES.glob("*/*.expect.json")):
        stem = expect.name.removesuffix(".expect.json")
        bodies = [expect.parent / (stem + ext) for ext in CONTENT_TYPES]
        bodies = [p for p in bodies if p.exists()]
        assert len(bodies) == 1, f"{expect}: expected exactly one body file"
        cases.append(pytest.param(bodies[0], id=f"{expect.parent.name}/{bodies[0].name}"))
    return cases


CASES = _cases()


def _observe(
    body_file: Path, chunks: Iterable[bytes], *, encoding: str | None = None
) -> list[Observation]:
    api = Api(body_file.parent.name)
    parser = parser_for(
        api,
        streaming=body_file.suffix in (".sse", ".ndjson"),
        content_type=CONTENT_TYPES[body_file.suffix],
        content_encoding=encoding,
    )
    out: list[Observation] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    out += parser.close()
    return out


def _expect(body_file: Path) -> dict[str, Any]:
    name = body_file.name.removesuffix(body_file.suffix) + ".expect.json"
    data: dict[str, Any] = json.loads((body_file.parent / name).read_text())
    return data


def test_every_api_has_fixtures() -> None:
    dirs = {p.parent.name for p in FIXTURES.glob("*/*.expect.json")}
    assert dirs == {a.value for a in Api}


@pytest.mark.parametrize("body_file", CASES)
def test_fixture_observations(body_file: Path) -> None:
    expect = _expect(body_file)
    obs = _observe(body_file, [body_file.read_bytes()])

    outputs = [i for i, o in enumerate(obs) if o.output]
    assert (outputs[0] if outputs else None) == expect["first_output_index"]
    assert len(outputs) == expect["output_events"]
    prompt = [o.prompt_tokens for o in obs if o.prompt_tokens is not None]
    completion = [o.completion_tokens for o in obs if o.completion_tokens is not None]
    assert (prompt[-1] if prompt else None) == expect["prompt_tokens"]
    assert (completion[-1] if completion else None) == expect["completion_tokens"]
    assert any(o.error for o in obs) is expect["error"]
    assert any(o.terminal for o in obs) is expect["terminal"]
    if "finish_reasons" in expect:
        assert [o.finish_reason for o in obs if o.finish_reason] == expect["finish_reasons"]
    if "response_model" in expect:
        models = [o.response_model for o in obs if o.response_model]
        assert models[-1] == expect["response_model"]
    if "tokens" in expect:
        assert [o.tokens for o in obs if o.tokens is not None] == expect["tokens"]
    if "events" in expect:
        assert len(obs) == expect["events"]


@pytest.mark.parametrize("body_file", CASES)
def test_fixture_record(body_file: Path) -> None:
    """The same body through the meter: exact and estimated counts never mix."""
    expect = _expect(body_file)
    streaming = body_file.suffix in (".sse", ".ndjson")
    api = Api(body_file.parent.name)
    parser = parser_for(
        api,
        streaming=streaming,
        content_type=CONTENT_TYPES[body_file.suffix],
        content_encoding=None,
    )
    meter = RequestMeter(0.0, streaming, expects_terminal=parser.expects_terminal)
    meter.first_byte(0.05)
    for i, obs in enumerate(parser.feed(body_file.read_bytes()) + parser.close()):
        meter.observe(obs, 0.1 + 0.01 * i)
    record = meter.finish(1.0, status=200, outcome=Outcome.COMPLETED)

    assert record.completion_tokens == expect["completion_tokens"]
    assert record.prompt_tokens == expect["prompt_tokens"]
    if expect["completion_tokens"] is None and streaming and expect["output_events"]:
        assert record.completion_tokens_estimated == expect["output_events"]
    else:
        assert record.completion_tokens_estimated is None
    if streaming and expect["first_output_index"] is not None:
        assert record.ttft == pytest.approx(0.1 + 0.01 * expect["first_output_index"])
        assert len(record.itl) == expect["output_events"] - 1
    else:
        assert record.ttft is None
        assert record.itl == ()
    if expect["error"]:
        assert record.error_type == "stream_error"
    elif parser.expects_terminal and not expect["terminal"]:
        assert record.error_type == "stream_truncated"
    else:
        assert record.error_type is None


# --- the same bytes, however they arrive -------------------------------------------------

Variant = Callable[[bytes], tuple[bytes, str | None]]


def _plain(body: bytes) -> tuple[bytes, str | None]:
    return body, None


def _crlf(body: bytes) -> tuple[bytes, str | None]:
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"), None


def _cr(body: bytes) -> tuple[bytes, str | None]:
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r"), None


def _gzip(body: bytes) -> tuple[bytes, str | None]:
    return gzip.compress(body, mtime=0), "gzip"


def _deflate_zlib(body: bytes) -> tuple[bytes, str | None]:
    return zlib.compress(body), "deflate"


def _deflate_raw(body: bytes) -> tuple[bytes, str | None]:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(body) + c.flush(), "deflate"


VARIANTS: dict[str, Variant] = {
    "plain": _plain,
    "crlf": _crlf,
    "cr": _cr,
    "gzip": _gzip,
    "deflate": _deflate_zlib,
    "raw-deflate": _deflate_raw,
}


SPLIT_CASES = [
    pytest.param(case.values[0], variant, id=f"{case.id}-{variant}")
    for case in CASES
    for variant in VARIANTS
    # CR line ends are an SSE rule
    if variant not in ("crlf", "cr") or case.values[0].suffix == ".sse"
]


@pytest.mark.parametrize(("body_file", "variant"), SPLIT_CASES)
def test_split_anywhere_same_observations(body_file: Path, variant: str) -> None:
    body = body_file.read_bytes()
    reference = _observe(body_file, [body])
    wire, encoding = VARIANTS[variant](body)

    assert _observe(body_file, [wire], encoding=encoding) == reference
    assert _observe(body_file, [wire[i : i + 1] for i in range(len(wire))], encoding=encoding) == (
        reference
    )
    for i in range(len(wire) + 1):
        got = _observe(body_file, [wire[:i], wire[i:]], encoding=encoding)
        assert got == reference, f"split at byte {i}"


@pytest.mark.parametrize("body_file", CASES)
def test_gzip_members_and_truncation(body_file: Path) -> None:
    """Two gzip members back to back decode as one body; a cut gzip observes a prefix."""
    body = body_file.read_bytes()
    reference = _observe(body_file, [body])
    half = len(body) // 2
    two_members = gzip.compress(body[:half], mtime=0) + gzip.compress(body[half:], mtime=0)
    assert _observe(body_file, [two_members], encoding="gzip") == reference

    wire = gzip.compress(body, mtime=0)
    for cut in range(0, len(wire), max(1, len(wire) // 40)):
        got = _observe(body_file, [wire[:cut]], encoding="gzip")
        if body_file.suffix != ".json":
            # every observation but the last one (which may be cut short) is a prefix
            assert got[:-1] == reference[: max(0, len(got) - 1)]
