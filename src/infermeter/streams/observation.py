"""What a parser reports for one event of a response body."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Observation:
    """One parsed event (SSE event, NDJSON line, or a whole JSON body).

    Holds counts and labels only, never generated text (privacy).

    - ``output``: the event carries generated output in any channel (design.md §2).
    - ``tokens``: tokens in this event when the format tells (TGI: 1; vLLM
      ``continuous_usage_stats``: the increase of the cumulative completion count).
    - ``prompt_tokens`` / ``completion_tokens``: an exact usage report in this event;
      reports are cumulative, so the latest one wins.
    - ``error``: an error event inside a successful (HTTP 200) response.
    - ``terminal``: the format's proper end (``[DONE]``, ``message_stop``, ...).
    - ``finish_reason`` and ``choice``: why choice number ``choice`` stopped.
    """

    output: bool = False
    tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error: bool = False
    terminal: bool = False
    response_model: str | None = None
    finish_reason: str | None = None
    choice: int = 0


#: Shared instances for the common cases, so the hot path allocates nothing.
NOTHING = Observation()
OUTPUT = Observation(output=True)
TERMINAL = Observation(terminal=True)
ERROR = Observation(error=True)
