"""Event-loop lag: how late the proxy's loop runs a timer. When it is high, the latencies
infermeter measures include its own delay, and users must know."""

from __future__ import annotations

import asyncio
from typing import Protocol

INTERVAL = 0.1


TASKS_EVERY = 10  # count tasks once a second: all_tasks() walks every task


class Observer(Protocol):
    def observe(self, amount: float) -> None: ...


class Setter(Protocol):
    def set(self, value: float) -> None: ...


async def watch_lag(histogram: Observer, tasks: Setter, interval: float = INTERVAL) -> None:
    loop = asyncio.get_running_loop()
    ticks = 0
    while True:
        expected = loop.time() + interval
        await asyncio.sleep(interval)
        histogram.observe(max(0.0, loop.time() - expected))
        if ticks % TASKS_EVERY == 0:
            tasks.set(len(asyncio.all_tasks(loop)))
        ticks += 1
