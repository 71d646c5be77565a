"""Response-body parsers: Content-Encoding, then framing, then one format's meaning.

The proxy forwards every chunk itself and hands a copy here; a parser only observes. It
returns one :class:`Observation` per SSE event (comments give none), per non-blank NDJSON
line, or for a whole JSON body at :meth:`StreamParser.close`. It never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from infermeter.streams.api import Api
from infermeter.streams.formats.anthropic import AnthropicInterpreter
from infermeter.streams.formats.base import Interpreter, loads
from infermeter.streams.formats.ollama import OllamaInterpreter
from infermeter.streams.formats.openai import OpenAIInterpreter
from infermeter.streams.formats.responses import ResponsesInterpreter
from infermeter.streams.formats.tgi import TGIInterpreter
from infermeter.streams.framing import ContentDecoder, NDJSONDecoder, SSEDecoder, SSEEvent
from infermeter.streams.observation import Observation

#: No observations, shared: what `feed_outputs` returns beside a count.
_NONE: tuple[Observation, ...] = ()

#: Largest non-streaming JSON body buffered for its usage report. Larger bodies (long
#: completions with logprobs, embeddings of big batches) are passed through but reported
#: without usage: holding them would cost memory per request in flight.
MAX_JSON_BODY_BYTES = 8 * 1024 * 1024

_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


class StreamParser(Protocol):
    """Observes one response body, chunk by chunk."""

    #: The format has a terminal event whose absence means the stream was truncated;
    #: pass it to :class:`~infermeter.streams.timing.RequestMeter`.
    expects_terminal: bool

    def feed(self, chunk: bytes) -> list[Observation]:
        """Observations completed by this chunk of raw (still encoded) body bytes."""
        ...

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        """`feed`, with the bulk of a stream made cheap: a chunk whose events are all plain
        output (each observed as `OUTPUT`) gives their count and no list, ``(n, ())``,
        for `RequestMeter.outputs`; any other chunk gives ``(0, feed(chunk))``."""
        ...

    def close(self) -> list[Observation]:
        """End of body: observations held back waiting for more bytes."""
        ...


class _FramedParser:
    """A decoded byte stream cut into events by a framer, each read by an interpreter."""

    __slots__ = ("_closed", "_content", "_interp", "expects_terminal")

    def __init__(self, interp: Interpreter, content: ContentDecoder) -> None:
        self._interp = interp
        self._content = content
        self._closed = False
        self.expects_terminal = interp.expects_terminal

    def _frames(self, data: bytes, *, final: bool) -> list[tuple[str, bytes]]:
        raise NotImplementedError

    def feed(self, chunk: bytes) -> list[Observation]:
        if self._closed:
            return []
        data = self._content.decode(chunk)
        if not data:
            return []
        event = self._interp.event
        whole = self._whole(data)
        if whole is not None:  # the bulk of a stream, read without event objects
            return [event("message", payload) for payload in whole]
        return [event(name, payload) for name, payload in self._frames(data, final=False)]

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        return 0, self.feed(chunk)

    def _whole(self, data: bytes) -> list[bytes] | None:
        """The data of the whole `message` events `data` consists of, when the framer can
        tell without its state machine (and consumes it); None: use `_frames`."""
        return None

    def close(self) -> list[Observation]:
        if self._closed:
            return []
        self._closed = True
        event = self._interp.event
        frames = self._frames(self._content.flush(), final=True)
        return [event(name, payload) for name, payload in frames]


class SSEParser(_FramedParser):
    """``text/event-stream`` bodies."""

    __slots__ = ("_plain", "_sse")

    def __init__(self, interp: Interpreter, content: ContentDecoder) -> None:
        super().__init__(interp, content)
        self._sse = SSEDecoder()
        # The one format whose bulk events can be told apart without parsing them, when
        # the chunk is the event bytes themselves.
        self._plain: Callable[[list[bytes]], bool] | None = (
            interp.plain_outputs
            if content.identity and isinstance(interp, OpenAIInterpreter)
            else None
        )

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        """One decoder call and one interpreter call for the bulk chunk of an OpenAI
        stream (whole `data:` events of text deltas), instead of a call per event."""
        plain = self._plain
        if plain is not None and not self._closed:
            whole = self._sse.whole_data(chunk)
            if whole is not None:
                if plain(whole):
                    return len(whole), _NONE
                event = self._interp.event
                return 0, [event("message", payload) for payload in whole]
        return 0, self.feed(chunk)

    def _whole(self, data: bytes) -> list[bytes] | None:
        return self._sse.whole_data(data)

    def _frames(self, data: bytes, *, final: bool) -> list[tuple[str, bytes]]:
        items = self._sse.feed_lines(data) if data else []  # after _whole, or at close
        if final:
            items += self._sse.close()
        return [(ev.event, ev.data) for ev in items if isinstance(ev, SSEEvent)]


class NDJSONParser(_FramedParser):
    """``application/x-ndjson`` bodies (Ollama)."""

    __slots__ = ("_lines",)

    def __init__(self, interp: Interpreter, content: ContentDecoder) -> None:
        super().__init__(interp, content)
        self._lines = NDJSONDecoder()

    def _frames(self, data: bytes, *, final: bool) -> list[tuple[str, bytes]]:
        lines = self._lines.feed(data) if data else []
        if final:
            lines += self._lines.close()
        return [("", line) for line in lines]


class JSONBodyParser:
    """A non-streaming JSON body, read whole at :meth:`close` for its usage report.

    Bounded: past :data:`MAX_JSON_BODY_BYTES` of decoded body it stops buffering and
    reports nothing. ``expects_terminal`` is False: a cut body shows up as the transfer's
    own failure, not as a missing event.
    """

    __slots__ = ("_closed", "_content", "_interp", "_max", "_parts", "_size", "expects_terminal")

    def __init__(
        self, interp: Interpreter, content: ContentDecoder, max_bytes: int | None = None
    ) -> None:
        self._interp = interp
        self._content = content
        self._max = MAX_JSON_BODY_BYTES if max_bytes is None else max_bytes
        self._parts: list[bytes] | None = []  # None once over the cap
        self._size = 0
        self._closed = False
        self.expects_terminal = False

    def feed(self, chunk: bytes) -> list[Observation]:
        if self._parts is not None and not self._closed:
            self._keep(self._content.decode(chunk))
        return []

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        return 0, self.feed(chunk)

    def close(self) -> list[Observation]:
        if self._closed:
            return []
        self._closed = True
        if self._parts is not None:
            self._keep(self._content.flush())
        parts, self._parts = self._parts, None
        if not parts or self._content.failed:
            return []
        return self._interp.body(loads(b"".join(parts)))

    def _keep(self, data: bytes) -> None:
        if not data or self._parts is None:
            return
        self._size += len(data)
        if self._size > self._max:
            self._parts = None
        else:
            self._parts.append(data)


class GenericParser:
    """Unknown formats: observes nothing; the request is timed by bytes only."""

    __slots__ = ("expects_terminal",)

    def __init__(self) -> None:
        self.expects_terminal = False

    def feed(self, chunk: bytes) -> list[Observation]:
        return []

    def feed_outputs(self, chunk: bytes) -> tuple[int, Sequence[Observation]]:
        return 0, _NONE

    def close(self) -> list[Observation]:
        return []


def interpreter_for(api: Api) -> Interpreter:
    """The meaning of ``api``'s events; ``other`` is read as OpenAI-compatible, without
    expecting ``[DONE]`` (an unknown path may be anything)."""
    if api is Api.RESPONSES:
        return ResponsesInterpreter()
    if api is Api.ANTHROPIC_MESSAGES:
        return AnthropicInterpreter()
    if api is Api.TGI_GENERATE:
        return TGIInterpreter()
    if api in (Api.OLLAMA_GENERATE, Api.OLLAMA_CHAT):
        return OllamaInterpreter()
    return OpenAIInterpreter(expects_terminal=api is not Api.OTHER)


def media_type(content_type: str | None) -> str:
    """``text/event-stream; charset=utf-8`` -> ``text/event-stream``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def parser_for(
    api: Api, *, streaming: bool, content_type: str | None, content_encoding: str | None
) -> StreamParser:
    """Pick a parser from the response's content type, falling back on the request.

    SSE for ``text/event-stream``; NDJSON for NDJSON types, and for Ollama paths when the
    request streams (whatever the content type says); a JSON body for ``application/json``
    and ``+json`` types; the generic parser otherwise (HTML error pages, unknown types).
    """
    mt = media_type(content_type)
    content = ContentDecoder(content_encoding)
    interp = interpreter_for(api)
    if mt == "text/event-stream":
        return SSEParser(interp, content)
    if mt in _NDJSON_TYPES or (streaming and api in (Api.OLLAMA_GENERATE, Api.OLLAMA_CHAT)):
        return NDJSONParser(interp, content)
    if mt == "application/json" or mt.endswith("+json"):
        return JSONBodyParser(interp, content)
    return GenericParser()
