"""A scripted upstream for tests: a real aiohttp server on loopback, in a background thread.

Each path answers with a Script: status, headers and body chunks sent after given delays,
then a clean end, a connection reset or a stall. It records what it received and whether
the client (the sidecar) went away, so tests can check cancellation and header hygiene.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from harness.sidecar import free_port


@dataclass
class Script:
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (delay before, bytes)
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "text/event-stream"})
    head_delay: float = 0.0  # before the status line
    end: Literal["clean", "reset", "stall"] = "clean"
    content_length: bool = False  # send Content-Length instead of chunked


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    disconnected: asyncio.Event | None = None
    gone: threading.Event = field(default_factory=threading.Event)


class ScriptedUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scripts: dict[str, Script] = {}
        self.seen: list[Seen] = []
        self.metrics_polls = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def script(self, path: str, script: Script) -> None:
        self.scripts[path] = script

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path_qs, dict(request.headers), body)
        script = self.scripts.get(request.path)
        if script is None and request.path == "/metrics":
            # the sidecar's engine-metrics fetcher polling, not traffic under test
            self.metrics_polls += 1
            return web.json_response({"error": "no script"}, status=404)
        self.seen.append(seen)
        if script is None:
            return web.json_response({"error": "no script"}, status=404)
        try:
            return await self._play(request, script)
        except (asyncio.CancelledError, ConnectionResetError):
            seen.gone.set()
            raise

    async def _play(self, request: web.Request, script: Script) -> web.StreamResponse:
        if script.head_delay:
            await asyncio.sleep(script.head_delay)
        response = web.StreamResponse(status=script.status, headers=script.headers)
        if script.content_length:
            response.content_length = sum(len(data) for _, data in script.chunks)
        await response.prepare(request)
        for delay, data in script.chunks:
            if delay:
                await asyncio.sleep(delay)
            await response.write(data)
        if script.end == "reset":
            assert request.transport is not None
            request.transport.abort()
            return response
        if script.end == "stall":
            await asyncio.sleep(3600)
        await response.write_eof()
        return response

    def start(self) -> ScriptedUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def scripted_upstream() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


def sse(*events: str) -> bytes:
    """SSE body from `data:` payloads."""
    return b"".join(b"data: " + event.encode() + b"\n\n" for event in events)
