"""Listening sockets, bound by us so that a busy or bad address fails start-up clearly."""

from __future__ import annotations

import socket

from infermeter.settings import HostPort


class StartupError(Exception):
    """Start-up cannot go on; the message names the setting involved."""


def bind(setting: str, address: HostPort) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {setting} {address}: {exc.strerror}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {setting} {address}: {exc.strerror}") from exc
    return sock
