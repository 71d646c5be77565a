"""The relay's measuring batches: bounded in size and time, in arrival order, complete on
flush (a request is recorded only after its chunks were measured)."""

from __future__ import annotations

import asyncio

from infermeter.proxy import deferred
from infermeter.proxy.deferred import Deferred


def test_chunks_are_measured_in_order_with_their_own_arrival_times() -> None:
    seen: list[tuple[str, bytes, float]] = []

    async def scenario() -> tuple[int, int]:
        later = Deferred()
        later.add(lambda c, t: seen.append(("a", c, t)), b"1", 1.0)
        later.add(lambda c, t: seen.append(("b", c, t)), b"2", 2.0)
        held = len(later)
        await asyncio.sleep(deferred.DELAY * 3)  # the timer measures the batch
        return held, len(later)

    held, left = asyncio.run(scenario())
    assert held == 2
    assert left == 0
    assert seen == [("a", b"1", 1.0), ("b", b"2", 2.0)]


def test_a_full_batch_is_measured_at_once_and_flush_empties_the_rest() -> None:
    seen: list[bytes] = []

    async def scenario() -> tuple[int, int]:
        later = Deferred()
        for i in range(deferred.MAX_PENDING + 3):
            later.add(lambda c, t: seen.append(c), b"%d" % i, float(i))
        after_full = len(later)
        later.flush()
        later.flush()  # nothing left: a no-op
        return after_full, len(later)

    after_full, left = asyncio.run(scenario())
    assert after_full == 3
    assert left == 0
    assert seen == [b"%d" % i for i in range(deferred.MAX_PENDING + 3)]


def test_a_flush_cancels_the_pending_timer() -> None:
    calls: list[bytes] = []

    async def scenario() -> None:
        later = Deferred()
        later.add(lambda c, t: calls.append(c), b"x", 0.0)
        later.flush()
        await asyncio.sleep(deferred.DELAY * 3)

    asyncio.run(scenario())
    assert calls == [b"x"]
