"""Raw-socket tools for hostile-client tests: a client that writes exactly the bytes given,
and an upstream that answers with exactly the bytes a test scripts, on real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import psutil

from harness.sidecar import Sidecar

Handler = Callable[[socket.socket, int], None]  # a connection and its number (0, 1, ...)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the peer closes (bounded by the socket's timeout)."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


def read_response(sock: socket.socket) -> bytes:
    """One response (Content-Length or chunked body), or everything until the close."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return head + b"\r\n\r\n" + body
        if line.lower() == b"transfer-encoding: chunked":
            while not body.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return head + b"\r\n\r\n" + body
    return data + read_all(sock)


def exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    with connect(port, timeout) as sock:
        sock.sendall(request)
        return read_response(sock)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


def send_until_cut(sock: socket.socket, pieces: Iterator[bytes]) -> int:
    """Write pieces until the peer stops us; the number of bytes written."""
    sent = 0
    try:
        for piece in pieces:
            sock.sendall(piece)
            sent += len(piece)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass
    return sent


def rss(sidecar: Sidecar) -> int:
    """Resident memory of the supervisor and its proxy workers."""
    root = psutil.Process(sidecar.proc.pid)
    return sum(int(p.memory_info().rss) for p in [root, *root.children(recursive=True)])


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    head = b"POST %b HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" % path.encode()
    head += b"".join(line + b"\r\n" for line in extra)
    return head + b"Content-Length: %d\r\n\r\n%b" % (len(body), body)


class RawUpstream:
    """A loopback upstream running `handler` on each connection in its own thread."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.received: list[bytes] = []  # request heads, in order
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number = self.connections
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(30)
        try:
            self.handler(conn, number)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """One request head and its Content-Length body, recorded; b"" at the close."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(body) < length:
            body += conn.recv(65536)
        self.received.append(head)
        return head

    def close(self) -> None:
        self.listener.close()
        for conn in self._open:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@contextmanager
def raw_upstream(handler: Handler) -> Iterator[RawUpstream]:
    upstream = RawUpstream(handler)
    try:
        yield upstream
    finally:
        upstream.close()


def wait_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the peer sends until it closes, and how long that took."""
    start = time.monotonic()
    sock.settimeout(timeout)
    data = read_all(sock)
    return data, time.monotonic() - start
