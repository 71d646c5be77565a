"""Per-request timing state machine (design.md §2), on injected monotonic times in seconds.

The proxy calls :meth:`RequestMeter.first_byte` at the first upstream body byte,
:meth:`RequestMeter.observe` for every parser observation with the time its chunk arrived,
and :meth:`RequestMeter.finish` once, after the last byte went to the client.

Decisions where the design is silent:

- Non-streaming requests have no TTFT, ITL or TPOT, and no estimated token count (one
  JSON body says nothing about tokens); goodput judges them on E2E only.
- An SLO applies to a request only when its quantity was measured: a streaming request
  without output has no TTFT, one with fewer than two output tokens or output events has
  no TPOT, and neither is held against it. Meeting an SLO means ``<=`` its threshold.
- TPOT needs two output-bearing events as well as two output tokens: with one event the
  first and last output times coincide and the quotient would be a meaningless 0.
- ``error_type`` precedence: the transfer's own failure (connect, timeout, client
  disconnect, proxy bug) > the upstream's HTTP status (4xx/5xx) > an error event in the
  stream > truncation (upstream reset, or a stream that expects a terminal event and ended
  with neither it nor a finish reason: servers that never send ``[DONE]`` but do finish
  their choices are not counted as truncated).
- With ``on_gap``, ITL gaps go to the sink as they happen and the record's ``itl`` is
  empty, so a 32k-token stream holds no per-token state.
- ``k`` for an ITL gap is the sum of the token counts reported by every event since the
  previous output-bearing event (TGI's special tokens and llama.cpp-style empty events
  still advance the count); 1 when none was reported.
- The estimate counts output-bearing events only when there was at least one; a stream
  with no output and no usage reports neither count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from infermeter.streams.observation import OUTPUT, Observation

#: Distinct choices whose finish reason is kept (``n`` is small in practice).
MAX_FINISH_REASONS = 16


class Outcome(StrEnum):
    """How the transfer ended, as the proxy saw it."""

    COMPLETED = "completed"
    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_RESET = "upstream_reset"  # upstream closed mid-body -> stream_truncated
    CLIENT_DISCONNECT = "client_disconnect"
    PROXY_INTERNAL = "proxy_internal"


class ErrorType(StrEnum):
    """The closed ``error_type`` label list of design.md §2."""

    UPSTREAM_CONNECT = "upstream_connect"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_HTTP_4XX = "upstream_http_4xx"
    UPSTREAM_HTTP_5XX = "upstream_http_5xx"
    STREAM_ERROR = "stream_error"
    STREAM_TRUNCATED = "stream_truncated"
    CLIENT_DISCONNECT = "client_disconnect"
    PROXY_INTERNAL = "proxy_internal"


_OUTCOME_ERRORS: dict[Outcome, ErrorType] = {
    Outcome.UPSTREAM_CONNECT: ErrorType.UPSTREAM_CONNECT,
    Outcome.UPSTREAM_TIMEOUT: ErrorType.UPSTREAM_TIMEOUT,
    Outcome.CLIENT_DISCONNECT: ErrorType.CLIENT_DISCONNECT,
    Outcome.PROXY_INTERNAL: ErrorType.PROXY_INTERNAL,
}


@dataclass(frozen=True, slots=True)
class SLO:
    """Goodput thresholds in seconds; None means not configured (defaults live in settings)."""

    ttft: float | None
    tpot: float | None
    e2e: float | None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """Everything measured for one request; times in seconds.

    ``itl`` holds ``(gap, k)`` pairs: observe ``gap / k`` into the histogram buckets ``k``
    times and add ``gap`` once to its sum. ``completion_tokens`` (exact, from usage) and
    ``completion_tokens_estimated`` (output-bearing events) are never both set.
    """

    streaming: bool
    status: int
    ttfb: float | None
    ttft: float | None
    itl: tuple[tuple[float, int], ...]
    tpot: float | None
    e2e: float
    prompt_tokens: int | None
    completion_tokens: int | None
    completion_tokens_estimated: int | None
    error_type: ErrorType | None
    finish_reasons: tuple[str, ...]
    response_model: str | None


class RequestMeter:
    """Accumulates one request's timing; cheap per observation, no text kept."""

    __slots__ = (
        "_completion",
        "_error",
        "_expects_terminal",
        "_finish_reasons",
        "_first_byte",
        "_first_output",
        "_itl",
        "_last_output",
        "_on_gap",
        "_outputs",
        "_pending_tokens",
        "_prompt",
        "_record",
        "_response_model",
        "_streaming",
        "_t0",
        "_terminal",
    )

    def __init__(
        self,
        t0: float,
        streaming: bool,
        *,
        expects_terminal: bool = False,
        on_gap: Callable[[float, int], None] | None = None,
    ) -> None:
        """``expects_terminal``: the parser's attribute of that name; when True, a
        completed stream that never saw its terminal event counts as truncated."""
        self._t0 = t0
        self._streaming = streaming
        self._expects_terminal = expects_terminal
        self._on_gap = on_gap
        self._first_byte: float | None = None
        self._first_output: float | None = None
        self._last_output = 0.0
        self._outputs = 0
        self._pending_tokens: int | None = None
        self._itl: list[tuple[float, int]] = []
        self._prompt: int | None = None
        self._completion: int | None = None
        self._error = False
        self._terminal = False
        self._response_model: str | None = None
        self._finish_reasons: dict[int, str] = {}
        self._record: RequestRecord | None = None

    def first_byte(self, t: float) -> None:
        """The first response body byte arrived (later calls are ignored)."""
        if self._first_byte is None:
            self._first_byte = t

    def observe(self, obs: Observation, t: float) -> None:
        """One parser observation, at the arrival time of the chunk that completed it."""
        if obs is OUTPUT:  # the bulk of a stream: output and nothing else
            self._output(t)
            return
        if obs.tokens is not None:
            pending = self._pending_tokens
            self._pending_tokens = obs.tokens if pending is None else pending + obs.tokens
        if obs.output:
            self._output(t)
        if obs.prompt_tokens is not None:
            self._prompt = obs.prompt_tokens
        if obs.completion_tokens is not None:
            self._completion = obs.completion_tokens
        if obs.error:
            self._error = True
        if obs.terminal:
            self._terminal = True
        if obs.response_model is not None:
            self._response_model = obs.response_model
        if obs.finish_reason is not None and (
            obs.choice in self._finish_reasons or len(self._finish_reasons) < MAX_FINISH_REASONS
        ):
            self._finish_reasons[obs.choice] = obs.finish_reason

    def outputs(self, n: int, t: float) -> None:
        """``n`` events observed as `OUTPUT` (and so nothing else), all at ``t``: what ``n``
        calls of `observe` would do, in one call (the bulk chunk of a stream, from
        `StreamParser.feed_outputs`). The gaps after the first are 0 at one token each."""
        output = self._output
        for _ in range(n):
            output(t)

    def _output(self, t: float) -> None:
        """An output-bearing event: the first output, or one ITL gap of the tokens pending
        (None or 0: one observation)."""
        self._outputs += 1
        if self._first_output is None:
            self._first_output = t
        else:
            k = self._pending_tokens or 1
            gap = t - self._last_output
            if gap < 0.0:  # max(gap, 0.0) without the call: this runs for nearly every chunk
                gap = 0.0
            if self._on_gap is not None:
                if self._streaming:
                    self._on_gap(gap, k)
            else:
                self._itl.append((gap, k))
        self._pending_tokens = None
        self._last_output = t

    def finish(self, t: float, *, status: int, outcome: Outcome) -> RequestRecord:
        """Close the request at ``t`` (last byte to the client); idempotent."""
        if self._record is not None:
            return self._record
        streaming = self._streaming
        first, outputs = self._first_output, self._outputs
        exact = self._completion
        output_tokens = exact if exact is not None else outputs

        ttft = tpot = None
        if streaming and first is not None:
            ttft = first - self._t0
            if output_tokens >= 2 and outputs >= 2:
                tpot = (self._last_output - first) / (output_tokens - 1)

        self._record = RequestRecord(
            streaming=streaming,
            status=status,
            ttfb=None if self._first_byte is None else self._first_byte - self._t0,
            ttft=ttft,
            itl=tuple(self._itl) if streaming else (),
            tpot=tpot,
            e2e=t - self._t0,
            prompt_tokens=self._prompt,
            completion_tokens=exact,
            completion_tokens_estimated=(
                outputs if exact is None and streaming and outputs > 0 else None
            ),
            error_type=self._error_type(status, outcome),
            finish_reasons=tuple(r for _, r in sorted(self._finish_reasons.items())),
            response_model=self._response_model,
        )
        self._itl = []
        return self._record

    def _error_type(self, status: int, outcome: Outcome) -> ErrorType | None:
        err = _OUTCOME_ERRORS.get(outcome)
        if err is not None:
            return err
        if status >= 500:
            return ErrorType.UPSTREAM_HTTP_5XX
        if status >= 400:
            return ErrorType.UPSTREAM_HTTP_4XX
        if self._error:
            return ErrorType.STREAM_ERROR
        if outcome is Outcome.UPSTREAM_RESET:
            return ErrorType.STREAM_TRUNCATED
        if (
            self._streaming
            and self._expects_terminal
            and not self._terminal
            and not self._finish_reasons
        ):
            return ErrorType.STREAM_TRUNCATED
        return None


def is_good(record: RequestRecord, slo: SLO) -> bool:
    """Goodput: succeeded, and met every configured SLO that was measured (see module doc)."""
    if record.error_type is not None:
        return False
    if slo.e2e is not None and record.e2e > slo.e2e:
        return False
    if slo.ttft is not None and record.ttft is not None and record.ttft > slo.ttft:
        return False
    return not (slo.tpot is not None and record.tpot is not None and record.tpot > slo.tpot)
