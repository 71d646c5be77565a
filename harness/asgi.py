"""Drive an ASGI application directly, as uvicorn would, without a server process."""

from __future__ import annotations

import asyncio
from typing import Any

from infermeter.proxy.app import ProxyApp


async def call(
    app: ProxyApp, body: bytes, path: str = "/v1/chat/completions"
) -> list[dict[str, Any]]:
    """POST `body` to `path`; every ASGI message the app sent back."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": body, "more_body": False}]
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
    }
    await app(scope, receive, send)
    done.set()
    return sent
