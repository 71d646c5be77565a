"""A loopback HTTP server standing in for an inference engine's /metrics: tests change its
behaviour per path while it runs (slow, huge, malformed, gone)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "tests" / "fixtures" / "engines"
VLLM = (FIXTURES / "vllm-0.11.prom").read_bytes()
Behaviour = Callable[[BaseHTTPRequestHandler], None]


def answer(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    def run(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return run


def drip(handler: BaseHTTPRequestHandler) -> None:
    """A byte every 50 ms for 2 s: each read is quick, the whole exchange is not."""
    handler.send_response(200)
    handler.send_header("content-length", "50000")
    handler.end_headers()
    try:
        for _ in range(40):
            handler.wfile.write(b"#")
            handler.wfile.flush()
            time.sleep(0.05)
    except OSError:
        pass


class Engine:
    """A loopback server whose behaviour per path tests change while it runs."""

    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {"/metrics": answer(VLLM)}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hits.append(self.path)
                routes.get(self.path, answer(b"not found", 404))(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def engine() -> Iterator[Engine]:
    server = Engine()
    try:
        yield server
    finally:
        server.close()
