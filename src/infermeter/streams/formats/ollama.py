"""Ollama ``/api/generate`` and ``/api/chat``: one JSON object per line.

Output is a non-empty ``response`` or ``thinking`` (generate), or ``message.content``,
``message.thinking`` or ``message.tool_calls`` (chat; Ollama sends a tool call whole, in
one line). The ``done: true`` line is the terminal and carries ``eval_count`` and
``prompt_eval_count``; Ollama omits ``prompt_eval_count`` when no prompt token was
evaluated (all cached), so an absent count is reported as unknown, not 0.
"""

from __future__ import annotations

from typing import Any

from infermeter.streams.formats.base import as_dict, as_int, as_str, loads, non_empty
from infermeter.streams.observation import NOTHING, Observation


def _line(doc: Any) -> Observation:
    if type(doc) is not dict:
        return NOTHING
    model = as_str(doc.get("model"))
    if doc.get("error"):
        return Observation(error=True, response_model=model)
    msg = as_dict(doc.get("message")) or {}
    output = (
        non_empty(doc.get("response"))
        or non_empty(doc.get("thinking"))
        or non_empty(msg.get("content"))
        or non_empty(msg.get("thinking"))
        or non_empty(msg.get("tool_calls"))
    )
    if doc.get("done") is not True:
        return Observation(output=output, response_model=model)
    return Observation(
        output=output,
        prompt_tokens=as_int(doc.get("prompt_eval_count")),
        completion_tokens=as_int(doc.get("eval_count")),
        terminal=True,
        response_model=model,
        finish_reason=as_str(doc.get("done_reason")),
    )


class OllamaInterpreter:
    """Lines of Ollama's native API; the non-streaming body is the same object."""

    __slots__ = ("expects_terminal",)

    def __init__(self) -> None:
        self.expects_terminal = True

    def event(self, name: str, data: bytes) -> Observation:
        return _line(loads(data))

    def body(self, doc: Any) -> list[Observation]:
        return [_line(doc)] if type(doc) is dict else []
