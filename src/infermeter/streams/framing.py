"""Incremental framing: Content-Encoding, SSE events and NDJSON lines, from raw bytes.

Everything works on bytes: line ends are ASCII so splitting never needs decoding, and
``json.loads`` takes bytes. Each decoder gives the same result however the input is split
into chunks, and none of them raises on any input.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

#: Largest SSE event or NDJSON line kept. A bigger one is dropped whole (observed as
#: nothing): real events are small, except a Responses ``response.completed`` that repeats
#: the whole output, which stays far below this.
MAX_EVENT_BYTES = 8 * 1024 * 1024

#: Largest decompressed output accepted from one compressed chunk; more is treated as a
#: decompression bomb and decoding stops.
MAX_INFLATE_PER_CHUNK = 64 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """A dispatched event: ``event`` is ``"message"`` when no ``event:`` field came."""

    event: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A ``:`` comment line (keep-alives, ``: OPENROUTER PROCESSING``); text after the colon."""

    text: bytes


class _PendingLine:
    """The unfinished last line of a byte stream cut into lines, held up to a size cap.

    A line that outgrows the cap is dropped whole, including the rest of it that arrives
    later, so where the chunks were cut never changes what is seen.
    """

    __slots__ = ("_len", "_max", "_parts", "discarding")

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._parts: list[bytes] = []
        self._len = 0
        self.discarding = False

    def complete_first(self, lines: list[bytes]) -> None:
        """Prefix lines[0] with the pending piece, or drop it if its line was dropped."""
        if self.discarding:
            self.discarding = False
            del lines[0]
        elif self._parts:
            self._parts.append(lines[0])
            lines[0] = b"".join(self._parts)
            self._parts = []
            self._len = 0

    def keep(self, piece: bytes) -> bool:
        """Hold a piece of an unfinished line; True when the line just outgrew the cap."""
        if self.discarding:
            return False
        self._len += len(piece)
        if self._len > self._max:
            self._parts = []
            self._len = 0
            self.discarding = True
            return True
        self._parts.append(piece)
        return False

    @property
    def idle(self) -> bool:
        """Nothing held: the next chunk starts a line."""
        return not self._parts and not self.discarding

    def take(self) -> bytes | None:
        """At the end of the stream: the pending line, if one is held."""
        line = b"".join(self._parts) if self._parts and not self.discarding else None
        self._parts = []
        self._len = 0
        self.discarding = False
        return line


class SSEDecoder:
    """WHATWG ``text/event-stream`` parsing, fed incrementally.

    Follows the HTML standard's rules (LF, CRLF and CR line ends; a leading BOM; multi-line
    ``data:`` joined with LF; ``event:``; comments; an event is dispatched on a blank line
    when it has data) with one deliberate difference: at :meth:`close`, an event that lacks
    its final blank line is still delivered, because servers do end streams that way.
    ``id:`` and ``retry:`` are ignored: nothing is measured from them.
    """

    __slots__ = (
        "_data",
        "_data_len",
        "_event",
        "_head",
        "_max",
        "_overflow",
        "_pending",
        "_skip_lf",
    )

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_event_bytes
        self._head: bytes | None = b""  # first bytes until the BOM check is done, then None
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF is its pair
        self._pending = _PendingLine(max_event_bytes)
        self._data: list[bytes] = []
        self._data_len = 0
        self._event = b""
        self._overflow = False  # the current event outgrew the cap: do not dispatch it

    def feed(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        """Consume bytes; return the events and comments completed by them."""
        fast = self.whole_data(chunk)
        if fast is not None:
            return [SSEEvent("message", data) for data in fast]
        return self.feed_lines(chunk)

    def feed_lines(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        """`feed` without trying `whole_data` first (for a caller that just did)."""
        head = self._head
        if head is not None:
            head += chunk
            if len(head) < 3 and _BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            chunk = head[3:] if head.startswith(_BOM) else head
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 0x0D
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

        lines = chunk.split(b"\n")
        last = lines.pop()
        out: list[SSEEvent | SSEComment] = []
        if lines:
            self._pending.complete_first(lines)  # a dropped line's event is dropped too
            line_fn = self._line
            for line in lines:
                line_fn(line, out)
        if last and self._pending.keep(last):
            self._overflow = True
        return out

    def whole_data(self, chunk: bytes) -> list[bytes] | None:
        """The common chunk, one or more whole `data: <one line>` events at a boundary
        between events, read without the line-by-line state machine: their data; None
        when the chunk is anything else (then `feed` it). Consumes the chunk when it
        returns a list: what `feed` would give, as plain data (no event objects)."""
        if (
            self._head is not None
            or chunk[:6] != b"data: "
            or chunk[-2:] != b"\n\n"
            or self._data
            or self._event
            or self._overflow
            or self._skip_lf
            or not self._pending.idle
            or chunk.find(b"\r") >= 0  # not `in`: for bytes, that first tries an int
        ):
            return None
        limit = self._max  # the line cap, stricter than the cap on the value's length + 1
        end = len(chunk) - 2
        if chunk.find(b"\n") == end:  # one event: the common chunk, one scan for its lines
            return [chunk[6:end]] if end <= limit else None
        out: list[bytes] = []
        for part in chunk[:-2].split(b"\n\n"):
            if part[:6] != b"data: " or part.find(b"\n") >= 0 or len(part) > limit:
                return None
            out.append(part[6:])
        return out

    def close(self) -> list[SSEEvent | SSEComment]:
        """End of stream: deliver a last line and event left without their terminators."""
        out: list[SSEEvent | SSEComment] = []
        head = self._head
        if head is not None:
            self._head = None
            if head:  # an incomplete BOM prefix is ordinary data
                out = self.feed(head)
        line = self._pending.take()
        if line is not None:
            self._line(line, out)
        self._line(b"", out)
        self._skip_lf = False
        return out

    def _line(self, line: bytes, out: list[SSEEvent | SSEComment]) -> None:
        if not line:
            if self._data and not self._overflow:
                name = self._event.decode("utf-8", "replace") if self._event else "message"
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                out.append(SSEEvent(name, data))
            self._data = []
            self._data_len = 0
            self._event = b""
            self._overflow = False
            return
        if len(line) > self._max:  # same cap whether the line came whole or in pieces
            self._overflow = True
            self._data = []
            return
        if line[0] == 0x3A:  # ":"
            out.append(SSEComment(line[1:]))
            return
        colon = line.find(b":")
        if colon < 0:
            field, value = line, b""
        else:
            field, value = line[:colon], line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if field == b"data":
            if self._overflow:
                return
            self._data_len += len(value) + 1
            if self._data_len > self._max:
                self._overflow = True
                self._data = []
            else:
                self._data.append(value)
        elif field == b"event":
            self._event = value


class NDJSONDecoder:
    """Newline-delimited JSON: one line per record, CRLF tolerated, blank lines skipped."""

    __slots__ = ("_max", "_pending")

    def __init__(self, max_line_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max = max_line_bytes
        self._pending = _PendingLine(max_line_bytes)

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume bytes; return the complete, non-blank lines (whitespace stripped)."""
        if b"\n" not in chunk:
            if chunk:
                self._pending.keep(chunk)
            return []
        lines = chunk.split(b"\n")
        last = lines.pop()
        self._pending.complete_first(lines)
        # the cap applies to whole lines too, so chunking never changes the result
        out = [s for line in lines if len(line) <= self._max and (s := line.strip())]
        if last:
            self._pending.keep(last)
        return out

    def close(self) -> list[bytes]:
        """End of stream: a last line without its newline still counts."""
        line = (self._pending.take() or b"").strip()
        return [line] if line else []


class ContentDecoder:
    """Undo ``Content-Encoding`` (identity, gzip, deflate) incrementally.

    Unsupported codings (br, zstd, stacked codings) and corrupt data make the decoder stop
    for good: it then returns nothing, so the parser observes nothing more; it never raises.
    ``deflate`` is sniffed: zlib-wrapped as RFC 9110 says, or raw as some servers send it.
    """

    __slots__ = ("_failed", "_head", "_identity", "_obj", "_wbits")

    def __init__(self, content_encoding: str | None) -> None:
        codings = [
            c
            for c in (p.strip().lower() for p in (content_encoding or "").split(","))
            if c and c != "identity"
        ]
        self._identity = not codings
        self._failed = False
        self._head = b""  # deflate: first bytes until the zlib header can be checked
        self._obj: zlib._Decompress | None = None
        self._wbits = 0
        if self._identity:
            return
        if codings in (["gzip"], ["x-gzip"]):
            self._wbits = 16 + zlib.MAX_WBITS
            self._obj = zlib.decompressobj(self._wbits)
        elif codings == ["deflate"]:
            self._wbits = 0  # decided by the first two bytes
        else:
            self._failed = True

    @property
    def identity(self) -> bool:
        """No coding to undo: `decode` returns its chunk unchanged."""
        return self._identity

    @property
    def failed(self) -> bool:
        """True once decoding stopped (unsupported coding or corrupt data)."""
        return self._failed

    def decode(self, chunk: bytes) -> bytes:
        """Decoded bytes for this chunk (possibly empty)."""
        if self._identity:
            return chunk
        if self._failed or not chunk:
            return b""
        if self._obj is None:
            self._head += chunk
            if len(self._head) < 2:
                return b""
            chunk, self._head = self._head, b""
            cmf, flg = chunk[0], chunk[1]
            zlib_wrapped = (cmf & 0x0F) == 8 and (cmf * 256 + flg) % 31 == 0
            self._wbits = zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS
            self._obj = zlib.decompressobj(self._wbits)
        return self._inflate(chunk)

    def flush(self) -> bytes:
        """End of stream: whatever the decompressor still holds."""
        if self._identity or self._failed:
            return b""
        if self._obj is None:
            if not self._head:
                return b""
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            head, self._head = self._head, b""
            out = self._inflate(head)
        else:
            out = b""
        try:
            out += self._obj.flush()
        except zlib.error:
            self._failed = True
        return out

    def _inflate(self, data: bytes) -> bytes:
        obj = self._obj
        if obj is None:
            return b""
        parts: list[bytes] = []
        try:
            while True:
                parts.append(obj.decompress(data, MAX_INFLATE_PER_CHUNK))
                if obj.unconsumed_tail:
                    self._failed = True
                    break
                if not (obj.eof and obj.unused_data and self._wbits > zlib.MAX_WBITS):
                    break
                # gzip allows several members back to back
                data = obj.unused_data
                obj = self._obj = zlib.decompressobj(self._wbits)
        except zlib.error:
            self._failed = True
        return b"".join(parts)
