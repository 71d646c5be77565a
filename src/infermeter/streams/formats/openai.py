"""OpenAI chat completions and completions (and every server copying them).

Output channels of a choice: ``delta.content``, ``delta.reasoning`` (vLLM),
``delta.reasoning_content`` (DeepSeek, SGLang, llama.cpp), ``delta.refusal``,
``delta.tool_calls[].function.arguments`` (and the legacy ``function_call``), and ``text``
for completions. A tool call's name alone is not output: design.md §2 names the
arguments, and Anthropic's tool-use start is treated the same way.
"""

from __future__ import annotations

import re
from typing import Any

from infermeter.streams.formats.base import as_dict, as_int, as_list, as_str, loads, non_empty
from infermeter.streams.observation import NOTHING, OUTPUT, TERMINAL, Observation

_DONE = b"[DONE]"
# The bulk of a stream: one choice, a non-empty text delta, no finish reason, no usage.
# Such chunks are recognised without json.loads (the parser's main cost), once the
# response model has been read from an earlier chunk.
_TEXT_DELTA = re.compile(rb'"delta":\{"(?:content|reasoning|reasoning_content)":"[^"]')
_TEXT_KEYS = ("content", "reasoning", "reasoning_content", "refusal")


def _plain_output(data: bytes) -> bool:
    """An event of the bulk of a stream (see `_TEXT_DELTA`): output and nothing else.

    `find`, not `in`: for bytes, `in` first tries its operand as an int (and fails)."""
    return (
        data.find(b'"finish_reason":null') >= 0
        and data.find(b'"usage"') < 0
        and data.find(b'"error"') < 0
        and data.count(b'"index"') == 1
        and _TEXT_DELTA.search(data) is not None
    )


def _tool_output(calls: object) -> bool:
    for call in as_list(calls):
        fn = as_dict(call.get("function")) if type(call) is dict else None
        if fn is not None and non_empty(fn.get("arguments")):
            return True
    return False


def _message_output(msg: dict[str, Any]) -> bool:
    for key in _TEXT_KEYS:
        if non_empty(msg.get(key)):
            return True
    if _tool_output(msg.get("tool_calls")):
        return True
    fc = as_dict(msg.get("function_call"))
    return fc is not None and non_empty(fc.get("arguments"))


def _is_error(doc: dict[str, Any]) -> bool:
    # OpenAI/SGLang/new vLLM: {"error": {...}}; older vLLM: {"object": "error", ...}
    return bool(doc.get("error")) or doc.get("object") == "error"


def _choices(doc: dict[str, Any], key: str) -> tuple[bool, str | None, int]:
    """(any output, first finish reason, its choice index) over ``choices``."""
    output = False
    reason: str | None = None
    index = 0
    for choice in as_list(doc.get("choices")):
        if type(choice) is not dict:
            continue
        if not output:
            msg = as_dict(choice.get(key))
            output = (msg is not None and _message_output(msg)) or non_empty(choice.get("text"))
        if reason is None:
            reason = as_str(choice.get("finish_reason"))
            if reason is not None:
                index = as_int(choice.get("index")) or 0
    return output, reason, index


class OpenAIInterpreter:
    """Chat completion chunks and completion chunks; terminal is ``data: [DONE]``.

    ``usage`` in a chunk is cumulative (vLLM ``continuous_usage_stats`` puts it in every
    chunk, ``include_usage`` in a last chunk with ``choices: []``, llama.cpp in the finish
    chunk); the increase of ``completion_tokens`` since the previous report is the
    chunk's token count. With ``n > 1`` that increase mixes choices; it is still reported.
    """

    __slots__ = ("_last_completion", "_model_seen", "expects_terminal")

    def __init__(self, *, expects_terminal: bool = True) -> None:
        self.expects_terminal = expects_terminal
        self._last_completion: int | None = None
        self._model_seen = False

    fast_path = True  # tests switch it off to prove it changes nothing

    def plain_outputs(self, events: list[bytes]) -> bool:
        """Whether `event` would read every one of these events as `OUTPUT` by its fast
        path, without changing any state: then the caller may count them instead (the
        bulk of a stream costs one call per chunk, not one per event)."""
        return self.fast_path and self._model_seen and all(map(_plain_output, events))

    def event(self, name: str, data: bytes) -> Observation:
        if self.fast_path and self._model_seen and _plain_output(data):
            return OUTPUT
        if data[:1] != b"{":
            stripped = data.strip()
            if stripped == _DONE:
                return TERMINAL
            if stripped[:1] != b"{":
                return NOTHING
        doc = loads(data)
        if type(doc) is not dict:
            return NOTHING
        model = as_str(doc.get("model"))
        if _is_error(doc):
            return Observation(error=True, response_model=model)
        self._model_seen = self._model_seen or model is not None

        prompt = completion = tokens = None
        usage = as_dict(doc.get("usage"))
        if usage is not None:
            prompt = as_int(usage.get("prompt_tokens"))
            completion = as_int(usage.get("completion_tokens"))
            if completion is not None:
                last = self._last_completion
                tokens = completion if last is None else completion - last
                if tokens < 0:
                    tokens = None
                self._last_completion = completion

        output, reason, index = _choices(doc, "delta")
        if not output and reason is None and usage is None and model is None:
            return NOTHING
        return Observation(
            output=output,
            tokens=tokens,
            prompt_tokens=prompt,
            completion_tokens=completion,
            response_model=model,
            finish_reason=reason,
            choice=index,
        )

    def body(self, doc: Any) -> list[Observation]:
        if type(doc) is not dict:
            return []
        model = as_str(doc.get("model"))
        if _is_error(doc):
            return [Observation(error=True, response_model=model)]
        usage = as_dict(doc.get("usage")) or {}
        output, _, _ = _choices(doc, "message")
        first = Observation(
            output=output,
            prompt_tokens=as_int(usage.get("prompt_tokens")),
            completion_tokens=as_int(usage.get("completion_tokens")),
            terminal=True,
            response_model=model,
        )
        reasons = [
            Observation(finish_reason=reason, choice=as_int(c.get("index")) or 0)
            for c in as_list(doc.get("choices"))
            if type(c) is dict and (reason := as_str(c.get("finish_reason"))) is not None
        ]
        return [first, *reasons]
