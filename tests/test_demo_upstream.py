"""The demo upstream speaks vLLM's OpenAI wire format: checked with the official openai client.

The server runs as a real process (`python -m infermeter.demo.upstream`), as users and the
benchmarks run it. Requests are sped up with `x-demo-ttft: 0` / `x-demo-itl: 0.001`; timing is
only checked with lower bounds (the server must never be early), which load cannot break.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from harness import http_client
from harness.sidecar import free_port, wait_for

if TYPE_CHECKING:
    import openai

ROOT = Path(__file__).parents[1]
FAST = {"x-demo-ttft": "0", "x-demo-itl": "0.001"}
PROMPT = "Tell me about the zebracorn in five words"  # 8 words: the prompt token estimate
MESSAGES: Any = [{"role": "user", "content": PROMPT}]
DEFAULT_TOKENS = 64


class Upstream:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log

    def post(self, path: str, body: object, **headers: str) -> httpx.Response:
        return http_client.post(self.url + path, json=body, headers={**FAST, **headers}, timeout=10)

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = http_client.get(self.url + "/demo/stats", timeout=5).json()
        return data


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    log = tmp_path / f"upstream-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infermeter.demo.upstream",
                "--listen",
                f"127.0.0.1:{port}",
                *flags,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, port, log


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    proc, port, log = _start(tmp_path_factory.mktemp("demo-upstream"))
    server = Upstream(proc, port, log)

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"demo upstream exited {proc.returncode}:\n{log.read_text()}")
        try:
            return http_client.get(server.url + "/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, what="demo upstream /health")
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    text = log.read_text()
    assert code == 0, text
    assert f"url=http://127.0.0.1:{port}/v1" in text  # the one line users need
    assert "POST /v1" not in text  # no access log


@pytest.fixture
def client(upstream: Upstream) -> Iterator[openai.OpenAI]:
    import openai  # here, not at the top: importing it costs every xdist worker's collection

    with openai.OpenAI(
        base_url=upstream.url + "/v1", api_key="demo", max_retries=0, default_headers=FAST
    ) as c:
        yield c


def _sse_events(raw: bytes) -> list[bytes]:
    assert raw.endswith(b"data: [DONE]\n\n"), raw[-200:]
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert all(e.startswith(b"data: ") for e in events[:-1]), events
    return [e[len(b"data: ") :] for e in events[:-1]]


def _raw_stream(upstream: Upstream, path: str, body: dict[str, Any], **headers: str) -> bytes:
    with http_client.stream(
        "POST", upstream.url + path, json=body, headers={**FAST, **headers}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_raw())


# --- chat completions ---------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_is_shaped_like_vllm(client: openai.OpenAI, include_usage: bool) -> None:
    import openai

    options: Any = {"include_usage": True} if include_usage else openai.omit
    with client.chat.completions.create(
        model="any/model-name", messages=MESSAGES, stream=True, stream_options=options
    ) as stream:
        chunks = list(stream)

    first, *rest = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert first.choices[0].finish_reason is None
    content = [c for c in rest if c.choices]
    assert len(content) == DEFAULT_TOKENS
    assert all(c.choices[0].delta.content for c in content)
    assert all(c.choices[0].delta.role is None for c in content)
    assert [c.choices[0].finish_reason for c in content] == [None] * (DEFAULT_TOKENS - 1) + ["stop"]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert {c.model for c in chunks} == {"any/model-name"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert "zebracorn" not in text  # filler, never the prompt
    if include_usage:
        assert rest[-1].choices == []
        usage = rest[-1].usage
        assert usage is not None
        assert usage.completion_tokens == DEFAULT_TOKENS
        assert usage.prompt_tokens == len(PROMPT.split())
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert len(rest) == DEFAULT_TOKENS
        assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_chat_stream_honours_max_tokens(client: openai.OpenAI, limit: str) -> None:
    kwargs: Any = {limit: 7}
    with client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        **kwargs,
    ) as stream:
        chunks = list(stream)
    content = [c for c in chunks[1:] if c.choices]
    assert len(content) == 7
    assert content[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_chat_continuous_usage_stats_count_up(client: openai.OpenAI) -> None:
    options: Any = {"include_usage": True, "continuous_usage_stats": True}
    with client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options=options, max_tokens=4
    ) as stream:
        chunks = list(stream)
    counts = [c.usage.completion_tokens if c.usage else None for c in chunks]
    assert counts == [0, 1, 2, 3, 4, 4]  # role, 4 tokens, final usage chunk


def test_chat_non_streaming_matches_the_stream(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, max_tokens=20
    ) as stream:
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    completion = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=20)
    assert completion.object == "chat.completion"
    assert completion.model == "m"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == streamed
    assert choice.finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 20
    assert completion.usage.prompt_tokens == len(PROMPT.split())
    assert completion.usage.total_tokens == 20 + len(PROMPT.split())


# --- completions --------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [False, True])
def test_completions_stream(client: openai.OpenAI, include_usage: bool) -> None:
    import openai

    options: Any = {"include_usage": True} if include_usage else openai.omit
    with client.completions.create(
        model="m", prompt=PROMPT, stream=True, max_tokens=10, stream_options=options
    ) as stream:
        chunks = list(stream)
    content = [c for c in chunks if c.choices]
    assert len(content) == 10  # no role chunk in completions
    assert {c.object for c in chunks} == {"text_completion"}
    assert all(c.choices[0].text for c in content)
    assert [c.choices[0].finish_reason for c in content] == [None] * 9 + ["length"]
    if include_usage:
        assert len(chunks) == 11
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 10
        assert chunks[-1].usage.prompt_tokens == len(PROMPT.split())
    else:
        assert len(chunks) == 10
        assert all(c.usage is None for c in chunks)


def test_completions_non_streaming(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="m", prompt=PROMPT)
    assert completion.object == "text_completion"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].text.startswith("The quick brown fox")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == DEFAULT_TOKENS
    assert completion.usage.prompt_tokens == len(PROMPT.split())


def test_completions_token_id_prompt_counts_ids(upstream: Upstream) -> None:
    body = {"prompt": [1, 2, 3, 4, 5], "max_tokens": 2}
    assert upstream.post("/v1/completions", body).json()["usage"]["prompt_tokens"] == 5


# --- raw wire -----------------------------------------------------------------------------


def test_raw_sse_bytes_end_with_done(upstream: Upstream) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    events = _sse_events(_raw_stream(upstream, "/v1/chat/completions", body))
    assert events[-1] == b"[DONE]"
    assert len(events) == 1 + 3 + 1  # role, tokens, [DONE]
    for event in events[:-1]:
        json.loads(event)
    raw = _raw_stream(upstream, "/v1/completions", {"prompt": "x", "stream": True})
    assert len(_sse_events(raw)) == DEFAULT_TOKENS + 1


def test_stamp_header_adds_send_time_to_every_chunk(upstream: Upstream) -> None:
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }
    before = time.time_ns()
    events = _sse_events(
        _raw_stream(upstream, "/v1/chat/completions", body, **{"x-demo-stamp": "1"})
    )
    after = time.time_ns()
    stamps = [json.loads(e)["demo_sent_ns"] for e in events[:-1]]
    assert len(stamps) == 1 + 5 + 1
    assert stamps == sorted(stamps)
    assert before - 60e9 < stamps[0]  # wall clock (time.time_ns), checked generously
    assert stamps[-1] < after + 60e9
    plain = _sse_events(_raw_stream(upstream, "/v1/chat/completions", body))
    assert all(b"demo_sent_ns" not in e for e in plain)


def test_model_defaults_to_the_configured_one(upstream: Upstream) -> None:
    response = upstream.post("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1})
    assert response.status_code == 200
    assert response.json()["model"] == "demo-model"


# --- per-request and runtime control ------------------------------------------------------


def test_token_header_sets_length_and_max_tokens_caps_it(client: openai.OpenAI) -> None:
    tokens = {"x-demo-tokens": "5"}
    done = client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=10, extra_headers=tokens
    )
    assert done.usage is not None
    assert done.usage.completion_tokens == 5
    assert done.choices[0].finish_reason == "stop"
    capped = client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=3, extra_headers=tokens
    )
    assert capped.usage is not None
    assert capped.usage.completion_tokens == 3
    assert capped.choices[0].finish_reason == "length"


def test_timing_headers_delay_tokens_never_early(upstream: Upstream) -> None:
    """The role chunk comes at once; the first token only after TTFT (lower bounds only)."""
    body = {"model": "m", "messages": MESSAGES, "stream": True, "max_tokens": 3}
    headers = {**FAST, "x-demo-ttft": "0.5", "x-demo-itl": "0.05"}
    arrivals: list[float] = []
    start = time.monotonic()
    with http_client.stream(
        "POST", upstream.url + "/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    role, first, _, third = arrivals
    assert first - start >= 0.49
    assert first - role >= 0.25  # the role chunk did not wait for the first token
    assert third - first >= 0.09


def test_bad_override_header_is_400(upstream: Upstream) -> None:
    for header, value in [("x-demo-ttft", "-1"), ("x-demo-itl", "fast"), ("x-demo-tokens", "0")]:
        response = upstream.post("/v1/chat/completions", {"messages": MESSAGES}, **{header: value})
        assert response.status_code == 400, header
        assert header in response.json()["error"]["message"]


def test_runtime_config_changes_the_next_request(upstream: Upstream, client: openai.OpenAI) -> None:
    original = http_client.get(upstream.url + "/demo/config", timeout=5).json()
    assert original == {
        "ttft": 0.2,
        "itl": 0.02,
        "output_tokens": DEFAULT_TOKENS,
        "jitter": 0.0,
        "model": "demo-model",
        "seed": None,
        "kv_capacity": 32,
    }
    try:
        response = http_client.post(
            upstream.url + "/demo/config", json={"output_tokens": 3}, timeout=5
        )
        assert response.status_code == 200
        assert response.json() == {**original, "output_tokens": 3}
        with client.chat.completions.create(model="m", messages=MESSAGES, stream=True) as s:
            content = [c for c in s if c.choices and c.choices[0].delta.content]
        assert len(content) == 3
        assert (
            http_client.get(upstream.url + "/demo/config", timeout=5).json()["output_tokens"] == 3
        )
    finally:
        settable = {
            k: original[k] for k in ("ttft", "itl", "output_tokens", "jitter", "kv_capacity")
        }
        http_client.post(upstream.url + "/demo/config", json=settable, timeout=5).raise_for_status()


@pytest.mark.parametrize(
    "body",
    [
        {"ttft": -0.1},
        {"itl": "fast"},
        {"output_tokens": 0},
        {"output_tokens": 2.5},
        {"jitter": 1.5},
        {"ttft": True},
        {"model": "other"},  # fixed at start
        {"ttfb": 1},  # typo
        [1, 2],
    ],
)
def test_runtime_config_rejects_bad_values(upstream: Upstream, body: object) -> None:
    before = http_client.get(upstream.url + "/demo/config", timeout=5).json()
    response = http_client.post(upstream.url + "/demo/config", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"
    assert (
        http_client.get(upstream.url + "/demo/config", timeout=5).json() == before
    )  # all or nothing


# --- errors and other endpoints -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/demo/config"])
def test_invalid_json_is_a_400_in_openai_shape(upstream: Upstream, path: str) -> None:
    response = http_client.post(
        upstream.url + path,
        content=b'{"messages": [',
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400
    assert error["message"]


def test_missing_messages_or_prompt_raises_bad_request(client: openai.OpenAI) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.BadRequestError, match="prompt"):
        client.post("/completions", body={"model": "m"}, cast_to=httpx.Response)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=0)


def test_models_and_health(upstream: Upstream, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo-model"]
    assert http_client.get(upstream.url + "/health", timeout=5).status_code == 200


# --- disconnects, command line ------------------------------------------------------------


@pytest.mark.parametrize("phase", ["waiting for the first token", "mid-stream"])
def test_client_disconnect_stops_generation(upstream: Upstream, phase: str) -> None:
    slow = {"x-demo-ttft": "30" if phase.startswith("waiting") else "0", "x-demo-itl": "0.05"}
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    before = upstream.stats()
    with http_client.stream(
        "POST",
        upstream.url + "/v1/chat/completions",
        json=body,
        headers={**slow, "x-demo-tokens": "100000"},
        timeout=10,
    ) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk
        if phase == "mid-stream":
            assert "content" in next(line for line in lines if line)
        assert upstream.stats()["in_flight"] == before["in_flight"] + 1

    # Leaving the block closed the connection: the stream must end long before 30 s / 100k
    # tokens would have.
    def stopped() -> dict[str, int] | None:
        stats = upstream.stats()
        return stats if stats["in_flight"] == before["in_flight"] else None

    after = wait_for(stopped, timeout=10, what="the disconnected stream to stop")
    assert after["disconnects"] == before["disconnects"] + 1


def test_bad_flag_exits_2_and_busy_port_exits_1(tmp_path: Path) -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "infermeter.demo.upstream", "--itl", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    assert "itl" in bad.stderr
    proc, port, log = _start(tmp_path)
    try:
        wait_for(lambda: "demo upstream serving" in log.read_text(), what="first server")
        busy = subprocess.run(
            [sys.executable, "-m", "infermeter.demo.upstream", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert busy.returncode == 1
        assert "--listen" in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
