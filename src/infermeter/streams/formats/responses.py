"""OpenAI Responses API: named SSE events, no ``[DONE]``.

Output is every ``*.delta`` event with a non-empty delta (text, reasoning, refusal,
function-call arguments, ...). ``response.completed`` / ``response.incomplete`` /
``response.failed`` end the stream and carry usage; ``response.failed`` and ``error`` are
errors. The finish reason is the response ``status`` (``completed``, ``failed``), or
``incomplete_details.reason`` for incomplete responses: the API has no finish_reason.
"""

from __future__ import annotations

from typing import Any

from infermeter.streams.formats.base import as_dict, as_int, as_list, as_str, loads, non_empty
from infermeter.streams.observation import ERROR, NOTHING, OUTPUT, Observation

_TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete"})
_LIFECYCLE = _TERMINAL | {"response.created", "response.in_progress", "response.queued"}
# Bookkeeping events that never matter: skipped by name, without json.loads.
_SKIP_SUFFIXES = (".added", ".done", ".in_progress", ".searching", ".generating")


def _response(resp: dict[str, Any], kind: str) -> Observation:
    usage = as_dict(resp.get("usage")) or {}
    status = as_str(resp.get("status"))
    reason: str | None = None
    if kind in _TERMINAL:
        details = as_dict(resp.get("incomplete_details")) or {}
        reason = as_str(details.get("reason")) or status or kind.removeprefix("response.")
    return Observation(
        prompt_tokens=as_int(usage.get("input_tokens")),
        completion_tokens=as_int(usage.get("output_tokens")),
        error=kind == "response.failed" or status == "failed",
        terminal=kind in _TERMINAL,
        response_model=as_str(resp.get("model")),
        finish_reason=reason,
    )


class ResponsesInterpreter:
    """Events of ``POST /v1/responses`` with ``stream: true``."""

    __slots__ = ("expects_terminal",)

    def __init__(self) -> None:
        self.expects_terminal = True

    def event(self, name: str, data: bytes) -> Observation:
        if name.endswith(_SKIP_SUFFIXES) and name not in _LIFECYCLE:
            return NOTHING
        doc = loads(data)
        if type(doc) is not dict:
            return NOTHING
        kind = as_str(doc.get("type")) or name
        if kind.endswith(".delta"):
            return OUTPUT if non_empty(doc.get("delta")) else NOTHING
        if kind in _LIFECYCLE:
            resp = as_dict(doc.get("response"))
            if resp is None:
                return Observation(terminal=kind in _TERMINAL, error=kind == "response.failed")
            return _response(resp, kind)
        if kind == "error":
            return ERROR
        return NOTHING

    def body(self, doc: Any) -> list[Observation]:
        if type(doc) is not dict:
            return []
        if doc.get("error") and doc.get("object") != "response":
            return [ERROR]
        status = as_str(doc.get("status"))
        obs = _response(doc, "response.failed" if status == "failed" else "response.completed")
        output = any(_item_output(item) for item in as_list(doc.get("output")))
        return [
            Observation(
                output=output,
                prompt_tokens=obs.prompt_tokens,
                completion_tokens=obs.completion_tokens,
                error=obs.error,
                terminal=True,
                response_model=obs.response_model,
                finish_reason=obs.finish_reason,
            )
        ]


def _item_output(item: object) -> bool:
    """An output item other than an empty reasoning placeholder."""
    if type(item) is not dict:
        return False
    if item.get("type") != "reasoning":
        return True
    return non_empty(item.get("summary")) or non_empty(item.get("content"))
