"""The worker -> supervisor channel: length-prefixed frames of `marshal`led plain data.

A Unix socketpair per worker (see the README's design notes): ordered, reliable, no
serialisation beyond marshal (the fastest codec of CPython for tuples, lists, dicts, str
and numbers), and the supervisor learns of a worker's death as end-of-file on the same
socket that carries its snapshots. Both ends are our own code and processes, so marshal's
lack of a stable format across Python versions does not matter.

Messages (tuples, first item the kind):
  ("hello", pid, [family declaration, ...])   once, first
  ("snap", [(family, labels, payload), ...])  every SNAPSHOT_INTERVAL, changed series only
  ("ready",)                                   the worker accepts connections
  ("draining",)                                the worker closed its listening socket
  ("bye", drain_aborted)                       after the final snapshot, before exit
"""

from __future__ import annotations

import marshal
import pickle
import socket
import struct
from typing import Any

from infermeter.worker_config import WorkerConfig

_HEADER = struct.Struct("!I")
#: Seconds between snapshots; a worker killed outright loses at most this much.
SNAPSHOT_INTERVAL = 0.25
MAX_FRAME = 256 * 1024 * 1024


def encode(message: Any) -> bytes:
    body = marshal.dumps(message)
    return _HEADER.pack(len(body)) + body


class Decoder:
    """Incremental: feed bytes as they arrive, get whole messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        out = []
        at = 0
        buffer = self._buffer
        while len(buffer) - at >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, at)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
            end = at + _HEADER.size + length
            if end > len(buffer):
                break
            out.append(marshal.loads(bytes(buffer[at + _HEADER.size : end])))
            at = end
        del buffer[:at]
        return out


# --- supervisor -> worker, once: the validated settings ---------------------------------------
def read_settings(channel: socket.socket) -> WorkerConfig:
    """The first frame from the supervisor: the worker's part of its validated settings."""
    head = _recv_exactly(channel, _HEADER.size)
    (length,) = _HEADER.unpack(head)
    settings = pickle.loads(_recv_exactly(channel, length))
    if not isinstance(settings, WorkerConfig):
        raise TypeError("the supervisor sent no settings")
    return settings


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the supervisor closed the channel")
        data += chunk
    return bytes(data)


def settings_frame(settings: WorkerConfig) -> bytes:
    body = pickle.dumps(settings)
    return _HEADER.pack(len(body)) + body
