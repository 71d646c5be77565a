"""Every recorded stream through the real sidecar: bytes unchanged, measured as the format says.

The recorded bodies (tests/fixtures/streams) are replayed by a scripted upstream in pieces
with small gaps; each case gets its own model label, so one sidecar serves them all.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import http_client
from harness.inprocess import run_inprocess
from harness.sidecar import SidecarClient, samples, value
from harness.upstream import Script, ScriptedUpstream, scripted_upstream

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).parents[1] / "fixtures" / "streams"
PATHS = {
    "chat_completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "responses": "/v1/responses",
    "anthropic_messages": "/v1/messages",
    "ollama_generate": "/api/generate",
    "ollama_chat": "/api/chat",
    "other": "/v1/embeddings",
}
TYPES = {
    ".sse": "text/event-stream",
    ".ndjson": "application/x-ndjson",
    ".json": "application/json",
    ".txt": "text/html",
}


@dataclass(frozen=True)
class Case:
    api: str
    name: str
    body: bytes
    content_type: str
    expect: dict[str, object]

    @property
    def streaming(self) -> bool:
        return self.content_type in ("text/event-stream", "application/x-ndjson")

    @property
    def path(self) -> str:
        if self.api == "tgi_generate":
            return "/generate_stream" if self.streaming else "/generate"
        return PATHS[self.api]

    @property
    def model(self) -> str:
        return f"{self.api}.{self.name}"


def cases() -> list[Case]:
    found = []
    for body in sorted(FIXTURES.glob("*/*")):
        if body.name.endswith(".expect.json"):
            continue
        expect = json.loads(body.with_name(body.stem + ".expect.json").read_text())
        found.append(
            Case(body.parent.name, body.stem, body.read_bytes(), TYPES[body.suffix], expect)
        )
    return found


CASES = cases()
READ = (
    "infermeter_time_to_first_token_seconds_count",
    "infermeter_completion_tokens_total",
    "infermeter_completion_tokens_estimated_total",
    "infermeter_prompt_tokens_total",
    "infermeter_request_errors_total",
)


def pieces(data: bytes, parts: int = 3) -> list[tuple[float, bytes]]:
    step = max(1, len(data) // parts)
    return [(0.005, data[i : i + step]) for i in range(0, len(data), step)]


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ScriptedUpstream, SidecarClient]]:
    tmp = tmp_path_factory.mktemp("formats")
    with (
        scripted_upstream() as upstream,
        run_inprocess(
            tmp, "--no-gpu-metrics", "--max-models", "1000", upstream=upstream.url
        ) as sidecar,
    ):
        yield upstream, sidecar


def request(base: str, case: Case, encoding: str | None = None) -> bytes:
    body = {"model": case.model, "stream": case.streaming, "messages": [], "prompt": "p"}
    headers = {"x-case": case.model}
    with http_client.stream(
        "POST", base + case.path, json=body, headers=headers, timeout=10
    ) as response:
        return b"".join(response.iter_raw())


def play(upstream: ScriptedUpstream, case: Case, body: bytes, encoding: str | None) -> None:
    headers = {"content-type": case.content_type}
    if encoding:
        headers["content-encoding"] = encoding
    upstream.script(case.path, Script(pieces(body), headers=headers))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_bytes_pass_unchanged_and_are_measured(
    rig: tuple[ScriptedUpstream, SidecarClient], case: Case
) -> None:
    upstream, sidecar = rig
    play(upstream, case, case.body, None)
    direct = request(upstream.url, case)
    proxied = request(sidecar.proxy_url, case)
    assert proxied == direct == case.body

    text = sidecar.wait_metric(
        "infermeter_requests_total", 1.0, only=READ, model=case.model, code="200"
    )
    expect = case.expect
    ttft = value(text, "infermeter_time_to_first_token_seconds_count", model=case.model)
    outputs = expect["output_events"]
    assert (ttft or 0.0) == (1.0 if case.streaming and outputs else 0.0)
    exact = expect["completion_tokens"]
    completion = value(text, "infermeter_completion_tokens_total", model=case.model)
    estimated = value(text, "infermeter_completion_tokens_estimated_total", model=case.model)
    if exact is not None:
        assert completion == float(exact)
        assert estimated in (None, 0.0)
    elif case.streaming and outputs:
        assert estimated == float(outputs)  # type: ignore[arg-type]
    if expect["prompt_tokens"] is not None:
        assert value(text, "infermeter_prompt_tokens_total", model=case.model) == float(
            expect["prompt_tokens"]  # type: ignore[arg-type]
        )
    error_types = {
        labels["error_type"]
        for labels in labelsets(text, "infermeter_request_errors_total", case.model)
    }
    if expect["error"]:
        assert "stream_error" in error_types
    elif (
        case.streaming
        and not expect["terminal"]
        and not expect.get("finish_reasons")
        and case.api != "other"
    ):
        assert error_types == {"stream_truncated"}
    else:
        assert error_types == set()


def labelsets(text: str, name: str, model: str) -> list[dict[str, str]]:
    return [
        dict(labels)
        for (sample, labels), v in samples(text).items()
        if sample == name and dict(labels).get("model") == model and v > 0
    ]


@pytest.mark.parametrize("case", [c for c in CASES if c.streaming][:6], ids=lambda c: c.model)
def test_gzip_streams_pass_compressed_and_are_still_measured(
    rig: tuple[ScriptedUpstream, SidecarClient], case: Case
) -> None:
    upstream, sidecar = rig
    packed = gzip.compress(case.body)
    gz = Case(case.api, case.name + ".gz", case.body, case.content_type, case.expect)
    play(upstream, gz, packed, "gzip")
    assert request(sidecar.proxy_url, gz) == packed
    text = sidecar.wait_metric(
        "infermeter_requests_total", 1.0, only=READ, model=gz.model, code="200"
    )
    if case.expect["output_events"]:
        assert value(text, "infermeter_time_to_first_token_seconds_count", model=gz.model) == 1.0


def test_malformed_stream_passes_byte_for_byte(rig: tuple[ScriptedUpstream, SidecarClient]) -> None:
    upstream, sidecar = rig
    junk = b"data: {not json\r\n\r\n\xff\xfe\x00data: \xc3\x28\n\nevent\nretry: x\n" + os.urandom(
        4096
    )
    case = Case("chat_completions", "malformed", junk, "text/event-stream", {})
    play(upstream, case, junk, None)
    assert request(sidecar.proxy_url, case) == junk
    sidecar.wait_metric("infermeter_requests_total", 1.0, only=READ, model=case.model, code="200")


def test_ten_megabyte_body_passes_unchanged(rig: tuple[ScriptedUpstream, SidecarClient]) -> None:
    upstream, sidecar = rig
    filler = "x" * (10 * 1024 * 1024)
    body = json.dumps(
        {
            "choices": [{"message": {"content": filler}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9},
        }
    ).encode()
    case = Case("chat_completions", "ten_mb", body, "application/json", {})
    play(upstream, case, body, None)
    assert request(sidecar.proxy_url, case) == body
    text = sidecar.wait_metric(
        "infermeter_requests_total", 1.0, only=READ, model=case.model, code="200"
    )
    # above the 8 MiB inspection cap: passed through, but not parsed for usage
    assert value(text, "infermeter_time_to_first_token_seconds_count", model=case.model) is None
    assert value(text, "infermeter_completion_tokens_total", model=case.model) is None
