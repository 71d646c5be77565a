"""What the demo upstream reads and writes: OpenAI request parsing and vLLM-shaped SSE bytes.

Pure code (no I/O) so the hot loop only concatenates precomputed bytes: the demo upstream is
the "inference server" in benchmarks with 1,000 concurrent streams and must not be their
bottleneck. The byte layout follows vLLM's `model_dump_json(exclude_unset=True)` output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Api = Literal["chat", "completions"]

# Filler output: deterministic, never derived from the prompt (so no user text is ever echoed
# into dashboards or logs). Each entry is one "token", BPE-style with a leading space.
_FILLER: Final = (
    "The quick brown fox jumps over the lazy dog while a patient operator watches the "
    "latency histograms settle into their usual shape and every token arrives on time."
)
_WORDS: Final = tuple(_FILLER.split(" "))
_TOKENS: Final = tuple((w if i == 0 else " " + w) for i, w in enumerate(_WORDS))
# JSON-encoded once: token i of a stream is _ENCODED[i % len] (first-token variant at 0).
_ENCODED: Final = tuple(json.dumps(t).encode() for t in _TOKENS)
_ENCODED_WRAP: Final = json.dumps(" " + _WORDS[0]).encode()

DONE: Final = b"data: [DONE]\n\n"
_END: Final = b"}\n\n"


def token_text(i: int) -> str:
    """Text of output token `i` (0-based); the cycle restarts with a leading space."""
    k = i % len(_TOKENS)
    return _TOKENS[k] if k or i == 0 else " " + _WORDS[0]


def _token_json(i: int) -> bytes:
    k = i % len(_TOKENS)
    return _ENCODED[k] if k or i == 0 else _ENCODED_WRAP


def output_text(n: int) -> str:
    return "".join(token_text(i) for i in range(n))


class BadRequest(ValueError):
    """The request is invalid; the message goes back to the client as a 400, as vLLM does."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one request needs, decided before the first byte is sent."""

    api: Api
    model: str
    stream: bool
    include_usage: bool
    continuous_usage: bool
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def _words(text: object) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def estimate_prompt_tokens(api: Api, body: Mapping[str, object]) -> int:
    """Cheap stand-in for a tokenizer: whitespace-separated words, at least 1.

    Chat: the words of every message's `content` (a string, or the `text` of its content
    parts). Completions: the words of `prompt` (a string or a list of strings), or the number of
    ids when the prompt is already tokenized (a list of ints, or of lists of ints).
    """
    total = 0
    if api == "chat":
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, list):
                total += sum(_words(p.get("text")) for p in content if isinstance(p, dict))
            else:
                total += _words(content)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            total = _words(prompt)
        elif isinstance(prompt, list):
            for item in prompt:
                if isinstance(item, str):
                    total += _words(item)
                elif isinstance(item, list):
                    total += len(item)
                else:
                    total += 1  # one token id
    return max(total, 1)


def _optional_positive_int(body: Mapping[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequest(f"{key} must be an integer >= 1, got {value!r}")
    return value


def plan_request(api: Api, body: object, *, natural_tokens: int, default_model: str) -> Plan:
    """Validate the request body like vLLM (400 on what it rejects) and decide the output."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: field required (a non-empty list)")
        if not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages: every message must be an object")
        limit = _optional_positive_int(body, "max_completion_tokens")
        if limit is None:
            limit = _optional_positive_int(body, "max_tokens")
    else:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list) or (isinstance(prompt, list) and not prompt):
            raise BadRequest("prompt: field required (a string or a non-empty list)")
        limit = _optional_positive_int(body, "max_tokens")
    model = body.get("model")
    if model is None or model == "":
        model = default_model
    elif not isinstance(model, str):
        raise BadRequest("model must be a string")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BadRequest("stream must be a boolean")
    options = body.get("stream_options")
    include_usage = continuous = False
    if options is not None:
        if not stream:
            raise BadRequest("Stream options can only be defined when `stream=True`.")
        if not isinstance(options, dict):
            raise BadRequest("stream_options must be an object")
        include_usage = options.get("include_usage") is True
        continuous = include_usage and options.get("continuous_usage_stats") is True
    if limit is not None and limit <= natural_tokens:
        tokens, finish = limit, "length"
    else:
        tokens, finish = natural_tokens, "stop"
    return Plan(
        api=api,
        model=model,
        stream=stream,
        include_usage=include_usage,
        continuous_usage=continuous,
        prompt_tokens=estimate_prompt_tokens(api, body),
        completion_tokens=tokens,
        finish_reason=finish,
    )


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def _usage_bytes(prompt_tokens: int, completion_tokens: int) -> bytes:
    return b',"usage":{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}' % (
        prompt_tokens,
        prompt_tokens + completion_tokens,
        completion_tokens,
    )


class ChunkEncoder:
    """The SSE events of one streamed response, built from byte templates.

    Per token this costs two bytes concatenations (no json.dumps), or a few more with
    `stamp` (the `demo_sent_ns` field a load generator uses to measure delivery delay) or
    vLLM's `continuous_usage_stats`.
    """

    __slots__ = ("_head", "_last_close", "_next_close", "_open", "_plan", "_stamp", "_tail")

    def __init__(self, plan: Plan, response_id: str, created: int, *, stamp: bool) -> None:
        self._plan = plan
        self._stamp = stamp
        kind = b"chat.completion.chunk" if plan.api == "chat" else b"text_completion"
        self._head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"choices":[' % (
            response_id.encode(),
            kind,
            created,
            json.dumps(plan.model).encode(),
        )
        finish = b'"%s"' % plan.finish_reason.encode()
        if plan.api == "chat":
            self._open = self._head + b'{"index":0,"delta":{"content":'
            self._next_close = b'},"logprobs":null,"finish_reason":null}]'
            self._last_close = b'},"logprobs":null,"finish_reason":%s,"stop_reason":null}]' % (
                finish
            )
        else:
            self._open = self._head + b'{"index":0,"text":'
            self._next_close = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]'
            self._last_close = b',"logprobs":null,"finish_reason":%s,"stop_reason":null}]' % (
                finish
            )
        # Fast path: the whole suffix of a non-final token chunk is one constant.
        self._tail = self._next_close + _END

    def _end(self, completion_tokens: int, sent_ns: int) -> bytes:
        parts = b""
        if self._plan.continuous_usage:
            parts = _usage_bytes(self._plan.prompt_tokens, completion_tokens)
        if self._stamp:
            parts += b',"demo_sent_ns":%d' % sent_ns
        return parts + _END

    def role(self, sent_ns: int = 0) -> bytes:
        """vLLM's first chat chunk: the role and an empty content, no output yet."""
        return (
            self._head
            + b'{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._end(0, sent_ns)
        )

    def token(self, i: int, sent_ns: int = 0) -> bytes:
        """Chunk of output token `i` (0-based); the last one carries the finish reason."""
        if i + 1 == self._plan.completion_tokens:
            return self._open + _token_json(i) + self._last_close + self._end(i + 1, sent_ns)
        if self._stamp or self._plan.continuous_usage:
            return self._open + _token_json(i) + self._next_close + self._end(i + 1, sent_ns)
        return self._open + _token_json(i) + self._tail

    def usage(self, sent_ns: int = 0) -> bytes:
        """The `stream_options.include_usage` chunk: no choices, the final usage."""
        plan = self._plan
        body = self._head + b"]" + _usage_bytes(plan.prompt_tokens, plan.completion_tokens)
        if self._stamp:
            body += b',"demo_sent_ns":%d' % sent_ns
        return body + _END
