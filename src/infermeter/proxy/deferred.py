"""Measuring after the bytes went out, a batch at a time.

A streamed chunk is written to the client the moment the upstream's bytes are parsed; what
the proxy measures of it (SSE framing, the event's JSON, the meter, the histograms) needs
only the chunk and the time it arrived. Done at once, that Python runs once per token event,
each time on a cold CPU cache (at 16 streams an event comes every ~1 ms and the worker sleeps
in between): measured in place it cost several times what it costs in a loop. Held for a
few milliseconds and run in a batch, it costs what it costs in a loop, and the figures are
the same because every chunk keeps its own arrival time.

The batch is bounded in time (`DELAY`) and size (`MAX_PENDING`), so the chunks held and the
time a batch occupies the loop are bounded too; a request's own chunks are always measured
before the request is recorded (`flush()`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: How long a chunk may wait to be measured. Hand-overs to the supervisor come every 0.25 s,
#: so no figure is seen later for it.
DELAY = 0.02
#: Chunks held at most: a full batch is measured at once (a few hundred microseconds of
#: work, so a batch never holds the other streams back by more).
MAX_PENDING = 32

Measure = Callable[[bytes, float], None]


class Deferred:
    """Chunks waiting to be measured, in arrival order, on the loop that relays them."""

    __slots__ = ("_handle", "_loop", "_pending")

    def __init__(self) -> None:
        self._pending: list[tuple[Measure, bytes, float]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, measure: Measure, chunk: bytes, now: float) -> None:
        """Measure `chunk`, which arrived at `now`, with the next batch. Never raises
        (`measure` must not)."""
        pending = self._pending
        pending.append((measure, chunk, now))
        if len(pending) >= MAX_PENDING:
            self.flush()
        elif self._handle is None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._handle = loop.call_later(DELAY, self.flush)

    def flush(self) -> None:
        """Measure everything held now (a request about to be recorded calls this)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        pending = self._pending
        if pending:
            self._pending = []
            for measure, chunk, now in pending:
                measure(chunk, now)

    def __len__(self) -> int:
        return len(self._pending)
