"""Path classification and request-body reading."""

from __future__ import annotations

import json

import pytest

from infermeter.streams.api import Api, api_for_path
from infermeter.streams.request_info import RequestInfo, parse_request_body


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", Api.CHAT_COMPLETIONS),
        ("/chat/completions", Api.CHAT_COMPLETIONS),
        ("/v1/chat/completions?api-version=2024-10-21", Api.CHAT_COMPLETIONS),
        ("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", Api.CHAT_COMPLETIONS),
        ("http://vllm:8000/v1/chat/completions", Api.CHAT_COMPLETIONS),
        ("/v1/chat/completions/", Api.CHAT_COMPLETIONS),
        ("/v1/completions", Api.COMPLETIONS),
        ("/completions", Api.COMPLETIONS),
        ("/v1/responses", Api.RESPONSES),
        ("/responses?stream=true", Api.RESPONSES),
        ("/v1/messages", Api.ANTHROPIC_MESSAGES),
        ("/messages", Api.ANTHROPIC_MESSAGES),
        ("/v1/messages?beta=true", Api.ANTHROPIC_MESSAGES),
        ("/generate_stream", Api.TGI_GENERATE),
        ("/generate", Api.TGI_GENERATE),
        ("/api/generate", Api.OLLAMA_GENERATE),
        ("/api/chat", Api.OLLAMA_CHAT),
        ("/v1/messages/count_tokens", Api.OTHER),
        ("/v1/responses/resp_123", Api.OTHER),
        ("/v1/models", Api.OTHER),
        ("/v1/embeddings", Api.OTHER),
        ("/health", Api.OTHER),
        ("/", Api.OTHER),
        ("", Api.OTHER),
        ("http://host", Api.OTHER),
        ("/api/tags", Api.OTHER),
    ],
)
def test_api_for_path(path: str, api: Api) -> None:
    assert api_for_path(path) is api


def body(**doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_openai_request() -> None:
    raw = body(
        model="gpt-4o", stream=True, stream_options={"include_usage": True}, n=2, messages=[]
    )
    assert parse_request_body(Api.CHAT_COMPLETIONS, raw) == RequestInfo("gpt-4o", True, True, 2)
    assert parse_request_body(Api.CHAT_COMPLETIONS, body(model="m")) == RequestInfo("m")


@pytest.mark.parametrize(
    ("doc", "stream"),
    [({"model": "llama3.2"}, True), ({"model": "x", "stream": False}, False)],
)
def test_ollama_streams_by_default(doc: dict[str, object], stream: bool) -> None:
    raw = json.dumps(doc).encode()
    for api in (Api.OLLAMA_CHAT, Api.OLLAMA_GENERATE):
        assert parse_request_body(api, raw).stream is stream


def test_tgi_streams_by_route() -> None:
    raw = body(inputs="hi", parameters={"max_new_tokens": 20})
    assert parse_request_body(Api.TGI_GENERATE, raw, path="/generate_stream?x").stream
    assert not parse_request_body(Api.TGI_GENERATE, raw, path="/generate").stream
    assert not parse_request_body(Api.TGI_GENERATE, raw + b" trailing", path="/generate").stream
    assert parse_request_body(Api.TGI_GENERATE, body(inputs="x", stream=True)).stream


def test_truncated_body_falls_back_to_scan() -> None:
    raw = body(model="meta-llama/Llama-3.1-8B-Instruct", stream=True, messages=["x" * 1000])
    info = parse_request_body(Api.CHAT_COMPLETIONS, raw[:200])
    assert info == RequestInfo("meta-llama/Llama-3.1-8B-Instruct", True)


def test_scan_ignores_escaped_keys_in_content() -> None:
    raw = b'{"messages":[{"content":"say \\"model\\": \\"evil\\" \\"stream\\": true"}],"x'
    assert parse_request_body(Api.CHAT_COMPLETIONS, raw) == RequestInfo()


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[1,2]", b"\xff\xfe", b"[" * 100_000, b'{"model": 5, "n": -1, "stream": 1}'],
)
def test_garbage_bodies(raw: bytes) -> None:
    assert parse_request_body(Api.CHAT_COMPLETIONS, raw) == RequestInfo()


def test_invalid_utf8_still_finds_model() -> None:
    assert parse_request_body(Api.OTHER, b'{"model": "m\xff1", "x": 1}').model == "m\ufffd1"
