"""The upstream side: one shared aiohttp session with a keep-alive pool.

aiohttp's client streams thousands of concurrent responses per core where httpx's pool
does not; bodies pass through untouched (no decompression, no added headers).
"""

from __future__ import annotations

import aiohttp

# Upstreams may send long headers (big cookies, tracing baggage); aiohttp's default of 8 KiB
# per header line would turn them into 502s.
MAX_HEADER_BYTES = 64 * 1024
# vLLM and SGLang run uvicorn with a 5 s keep-alive: drop idle connections before the
# upstream does, or a request can be sent on a connection the upstream is closing.
KEEPALIVE_SECONDS = 4.0


class UpstreamClient:
    def __init__(
        self,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
    ) -> None:
        self._pool_size = pool_size
        self.timeout = aiohttp.ClientTimeout(
            total=total_timeout or None,
            sock_connect=connect_timeout,
            sock_read=read_timeout or None,
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_SECONDS,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type", "Accept"),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                max_line_size=MAX_HEADER_BYTES,
                max_field_size=MAX_HEADER_BYTES,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
