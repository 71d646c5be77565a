"""Hugging Face TGI ``/generate_stream`` (SSE) and ``/generate`` (JSON).

One event per token, so each carries ``tokens=1``. A ``special`` token (EOS and the like)
counts as a token but is not output: it has no visible text, and counting it would put a
fake, near-zero gap at the end of every ITL series. Its token still counts toward the
next output event's ``k``. The last event carries ``generated_text`` (and ``details`` with
``generated_tokens`` only when the request asked for details); that is the terminal.
"""

from __future__ import annotations

from typing import Any

from infermeter.streams.formats.base import as_dict, as_int, as_str, loads, non_empty
from infermeter.streams.observation import ERROR, NOTHING, Observation

_TOKEN = Observation(tokens=1)
_TOKEN_OUTPUT = Observation(output=True, tokens=1)


def _details(doc: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
    details = as_dict(doc.get("details")) or {}
    return (
        as_int(details.get("input_length")),
        as_int(details.get("generated_tokens")),
        as_str(details.get("finish_reason")),
    )


class TGIInterpreter:
    """Token events of TGI's native API."""

    __slots__ = ("expects_terminal",)

    def __init__(self) -> None:
        self.expects_terminal = True

    def event(self, name: str, data: bytes) -> Observation:
        doc = loads(data)
        if type(doc) is not dict:
            return NOTHING
        if doc.get("error"):
            return ERROR
        token = as_dict(doc.get("token"))
        output = (
            token is not None and token.get("special") is not True and non_empty(token.get("text"))
        )
        terminal = doc.get("generated_text") is not None or doc.get("details") is not None
        if not terminal:
            if token is None:
                return NOTHING
            return _TOKEN_OUTPUT if output else _TOKEN
        prompt, completion, reason = _details(doc)
        return Observation(
            output=output,
            tokens=1 if token is not None else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            terminal=True,
            finish_reason=reason,
        )

    def body(self, doc: Any) -> list[Observation]:
        if type(doc) is list:  # some TGI versions answer a list of one
            doc = doc[0] if len(doc) == 1 else None
        if type(doc) is not dict:
            return []
        if doc.get("error"):
            return [ERROR]
        prompt, completion, reason = _details(doc)
        return [
            Observation(
                output=non_empty(doc.get("generated_text")),
                prompt_tokens=prompt,
                completion_tokens=completion,
                terminal=True,
                finish_reason=reason,
            )
        ]
