"""Event-loop lag: how late the proxy's loop runs a timer. When it is high, the latencies
infermeter measures include its own delay, and users must know."""

from __future__ import annotations

import asyncio
from typing import Protocol

INTERVAL = 0.1


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


async def watch_lag(histogram: Observer, interval: float = INTERVAL) -> None:
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - expected))
