"""Anthropic Messages streaming: ``message_start`` ... ``message_stop``.

Output is a ``content_block_delta`` with non-empty ``text``, ``thinking`` or
``partial_json`` (tool input); ``signature_delta`` and ``citations_delta`` are not
generated text. Prompt tokens are ``input_tokens`` plus the cache read/creation counts
(Anthropic reports those apart; the prompt the model saw is their sum). Completion tokens
come from ``message_delta`` only: they are cumulative (take the latest, never sum), and
``message_start``'s ``output_tokens`` is a placeholder, not a count.
"""

from __future__ import annotations

from typing import Any

from infermeter.streams.formats.base import add_ints, as_dict, as_int, as_str, loads, non_empty
from infermeter.streams.observation import ERROR, NOTHING, OUTPUT, TERMINAL, Observation

_SKIP = frozenset({"ping", "content_block_start", "content_block_stop"})


def _prompt_tokens(usage: dict[str, Any]) -> int | None:
    if as_int(usage.get("input_tokens")) is None:
        return None
    return add_ints(
        usage.get("input_tokens"),
        usage.get("cache_creation_input_tokens"),
        usage.get("cache_read_input_tokens"),
    )


class AnthropicInterpreter:
    """Events of ``POST /v1/messages`` with ``stream: true``."""

    __slots__ = ("expects_terminal",)

    def __init__(self) -> None:
        self.expects_terminal = True

    def event(self, name: str, data: bytes) -> Observation:
        if name in _SKIP:
            return NOTHING
        if name == "message_stop":
            return TERMINAL
        doc = loads(data)
        if type(doc) is not dict:
            return NOTHING
        kind = doc.get("type")
        if kind == "content_block_delta":
            delta = as_dict(doc.get("delta"))
            if delta is not None and (
                non_empty(delta.get("text"))
                or non_empty(delta.get("thinking"))
                or non_empty(delta.get("partial_json"))
            ):
                return OUTPUT
            return NOTHING
        if kind == "message_delta":
            usage = as_dict(doc.get("usage")) or {}
            delta = as_dict(doc.get("delta")) or {}
            return Observation(
                prompt_tokens=_prompt_tokens(usage),
                completion_tokens=as_int(usage.get("output_tokens")),
                finish_reason=as_str(delta.get("stop_reason")),
            )
        if kind == "message_start":
            msg = as_dict(doc.get("message")) or {}
            usage = as_dict(msg.get("usage")) or {}
            return Observation(
                prompt_tokens=_prompt_tokens(usage), response_model=as_str(msg.get("model"))
            )
        if kind == "message_stop":
            return TERMINAL
        if kind == "error":
            return ERROR
        return NOTHING

    def body(self, doc: Any) -> list[Observation]:
        if type(doc) is not dict:
            return []
        if doc.get("type") == "error":
            return [ERROR]
        usage = as_dict(doc.get("usage")) or {}
        return [
            Observation(
                output=non_empty(doc.get("content")),
                prompt_tokens=_prompt_tokens(usage),
                completion_tokens=as_int(usage.get("output_tokens")),
                terminal=True,
                response_model=as_str(doc.get("model")),
                finish_reason=as_str(doc.get("stop_reason")),
            )
        ]
